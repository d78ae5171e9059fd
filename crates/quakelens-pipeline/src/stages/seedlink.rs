//! SeedLink (v3/v4) → `waveforms.raw`: a live feed from a network's SeedLink server (ringserver,
//! SeisComP, IRIS, GEOFON …) through `seedlink-rs-client`; after a drop, a restart or a quiet
//! spell the session is opened again and each station resumes after its last relayed sequence. Records are published like ingest's:
//! key `NET.STA.LOC.CHA`, partition by station; undecodable frames go to `dead-letter`.

use std::collections::HashMap;
use std::time::Duration;

use seedlink_rs_client::{
    ClientConfig, ClientError, ReconnectConfig, ReconnectingClient, StationKey,
};
use seedlink_rs_protocol::SequenceNumber;
use tokio::sync::mpsc;

use quakelens_signal::miniseed::decode_record;
use quakelens_transport::topics::{header, DEAD_LETTER, WAVEFORMS_RAW};
use quakelens_transport::{partition_for, Outgoing, Transport};

use super::{stopped, StageError, StageMetrics, Stop};

/// One subscription: `NET_STA` with optional channel selectors (`NET_STA:HH? BH?`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    pub network: String,
    pub station: String,
    pub select: Vec<String>,
}

impl std::str::FromStr for Subscription {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (id, select) = s.split_once(':').unwrap_or((s, ""));
        let (network, station) = id
            .split_once('_')
            .filter(|(n, st)| !n.is_empty() && !st.is_empty())
            .ok_or_else(|| format!("{s:?} is not NET_STA[:SELECTORS]"))?;
        Ok(Self {
            network: network.to_string(),
            station: station.to_string(),
            select: select.split_whitespace().map(str::to_string).collect(),
        })
    }
}

#[derive(Clone, Debug)]
pub struct SeedLinkConfig {
    /// `host:port` of the SeedLink server.
    pub server: String,
    pub subscriptions: Vec<Subscription>,
    /// Longest wait before a partial batch is sent (latency bound).
    pub flush: Duration,
    pub batch: usize,
}

/// Relays frames until `stop`. A server that goes quiet, drops the connection or restarts is
/// a normal day for a live feed: the session is opened again (with backoff) and each station
/// resumes after the last sequence number relayed, so nothing is sent twice or skipped. Only
/// the first connection's failure is an error (a wrong address or subscription).
pub async fn relay<T: Transport>(
    t: &T,
    cfg: &SeedLinkConfig,
    stop: Stop,
    metrics: &StageMetrics,
) -> Result<(), StageError> {
    let partitions = t.partitions(WAVEFORMS_RAW)?;
    let first = open_session(cfg, &HashMap::new())
        .await
        .map_err(|e| StageError::Input(format!("SeedLink {}: {e}", cfg.server)))?;
    tracing::info!(server = %cfg.server, stations = cfg.subscriptions.len(), "SeedLink streaming");

    // Frames are read in their own task: a read cut short by a timeout would lose framing.
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(4096);
    let reader = tokio::spawn(read_frames(cfg.clone(), first, tx));
    let mut pending = Vec::new();
    let mut open = true;
    while open && !stopped(&stop) {
        match tokio::time::timeout(cfg.flush, rx.recv()).await {
            Ok(Some(payload)) => {
                metrics.records_in.inc();
                pending.push(to_message(payload, partitions, &cfg.server));
            }
            Ok(None) => open = false,
            Err(_) => {}
        }
        while pending.len() < cfg.batch {
            match rx.try_recv() {
                Ok(payload) => {
                    metrics.records_in.inc();
                    pending.push(to_message(payload, partitions, &cfg.server));
                }
                Err(_) => break,
            }
        }
        if !pending.is_empty() {
            let dead = pending.iter().filter(|m| m.topic == DEAD_LETTER).count();
            metrics.dead_lettered(dead);
            metrics.records_out.inc_by((pending.len() - dead) as u64);
            let (n, started) = (pending.len(), std::time::Instant::now());
            t.send(std::mem::take(&mut pending)).await?;
            metrics.batch(n, started.elapsed().as_secs_f64());
        }
    }
    reader.abort();
    Ok(())
}

/// Connects and subscribes, each station from after `resume`'s sequence when it has one.
async fn open_session(
    cfg: &SeedLinkConfig,
    resume: &HashMap<StationKey, SequenceNumber>,
) -> Result<ReconnectingClient, ClientError> {
    let mut client = ReconnectingClient::connect_with_config(
        &cfg.server,
        ClientConfig::default(),
        ReconnectConfig::default(),
    )
    .await?;
    for sub in &cfg.subscriptions {
        client.station(&sub.station, &sub.network).await?;
        for pattern in &sub.select {
            client.select(pattern).await?;
        }
        let key = StationKey {
            network: sub.network.clone(),
            station: sub.station.clone(),
        };
        match resume.get(&key) {
            Some(&seq) => client.data_from(seq).await?,
            None => client.data().await?,
        }
    }
    client.end_stream().await?;
    Ok(client)
}

/// Reads frames for ever, opening a new session after any error (a read timeout on a quiet
/// feed included); frames at or before a station's last relayed sequence are dropped.
async fn read_frames(
    cfg: SeedLinkConfig,
    mut client: ReconnectingClient,
    tx: mpsc::Sender<Vec<u8>>,
) {
    let mut relayed: HashMap<StationKey, SequenceNumber> = HashMap::new();
    let mut backoff = Duration::from_secs(1);
    loop {
        let problem = match client.next_frame().await {
            Ok(Some(frame)) => {
                if let Some(key) = frame.station_key() {
                    let seq = frame.sequence();
                    if relayed.get(&key).is_some_and(|&last| seq <= last) {
                        continue;
                    }
                    relayed.insert(key, seq);
                }
                if tx.send(frame.payload().to_vec()).await.is_err() {
                    return;
                }
                backoff = Duration::from_secs(1);
                continue;
            }
            Ok(None) => "the server ended the stream".to_string(),
            Err(e) => e.to_string(),
        };
        tracing::warn!(server = %cfg.server, "SeedLink: {problem}; reconnecting");
        loop {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(60));
            match open_session(&cfg, &relayed).await {
                Ok(c) => {
                    tracing::info!(server = %cfg.server, "SeedLink: session opened again");
                    client = c;
                    break;
                }
                Err(e) => tracing::warn!(server = %cfg.server, "SeedLink: reconnect failed: {e}"),
            }
        }
    }
}

fn to_message(payload: Vec<u8>, partitions: i32, server: &str) -> Outgoing {
    match decode_record(&payload) {
        Ok(r) => {
            let station =
                r.id.split_component()
                    .map(|(k, _)| k.to_string())
                    .unwrap_or_else(|| r.id.to_string());
            Outgoing::new(WAVEFORMS_RAW, r.id.to_string(), payload)
                .to_partition(partition_for(station.as_bytes(), partitions))
        }
        Err(reason) => {
            tracing::warn!("SeedLink frame from {server}: {reason}");
            Outgoing::new(DEAD_LETTER, "seedlink", payload)
                .header(header::ERROR, reason)
                .header(header::STAGE, "ingest")
                .header(header::ORIGIN, format!("seedlink://{server}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_parse() {
        let s: Subscription = "BW_RJOB:EH? HH?".parse().unwrap();
        assert_eq!((s.network.as_str(), s.station.as_str()), ("BW", "RJOB"));
        assert_eq!(s.select, vec!["EH?", "HH?"]);
        assert!("RJOB".parse::<Subscription>().is_err());
        assert!("_X".parse::<Subscription>().is_err());
    }
}
