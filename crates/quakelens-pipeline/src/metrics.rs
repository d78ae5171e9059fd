//! Prometheus metrics, one registry per process. Families are registered once; a family with no
//! labelled child yet is simply absent from a scrape, so each service shows what it does.
//!
//! Conventions: `quakelens_` prefix, base units (`_seconds`), counters end in `_total`, and
//! labels stay bounded: `stage` (a handful), `model` (cnn, forest), `topic`/`partition` (set by
//! the topic layout) and `station` (`NET.STA.LOC.BAND`, bounded by the network's inventory).

use std::sync::Arc;

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use quakelens_transport::kafka::PartitionLag;
use serde::Serialize;

/// Seconds from a window's last sample to an output: live feeds sit at 0.5–5 s, replays of
/// archives far beyond (the +Inf bucket).
const LATENCY_BUCKETS: [f64; 14] = [
    0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
];
const DURATION_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];
const BATCH_BUCKETS: [f64; 11] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// The name of every family [`Metrics`] registers (dashboards and alert rules may use only these,
/// the process collector's `process_*` and Prometheus's own series).
pub const FAMILIES: [&str; 21] = [
    "quakelens_records_in_total",
    "quakelens_records_out_total",
    "quakelens_records_failed_total",
    "quakelens_dead_letters_total",
    "quakelens_batch_records",
    "quakelens_batch_duration_seconds",
    "quakelens_window_latency_seconds",
    "quakelens_consumer_lag_messages",
    "quakelens_model_inference_seconds",
    "quakelens_windows_total",
    "quakelens_gap_runs_total",
    "quakelens_filled_samples_total",
    "quakelens_resampled_windows_total",
    "quakelens_late_samples_total",
    "quakelens_station_last_sample_timestamp_seconds",
    "quakelens_predictions_total",
    "quakelens_aftershock_probability",
    "quakelens_queries_total",
    "quakelens_query_duration_seconds",
    "quakelens_shap_task_duration_seconds",
    "quakelens_shap_band_mass_ratio",
];

/// Every family a quakelens process can export.
pub struct Metrics {
    registry: Registry,
    records_in: IntCounterVec,
    records_out: IntCounterVec,
    records_failed: IntCounterVec,
    dead_letters: IntCounterVec,
    batch_records: HistogramVec,
    batch_seconds: HistogramVec,
    window_latency: HistogramVec,
    consumer_lag: IntGaugeVec,
    inference_seconds: HistogramVec,
    windows: IntCounterVec,
    gap_runs: IntCounterVec,
    filled_samples: IntCounterVec,
    resampled_windows: IntCounterVec,
    late_samples: IntCounterVec,
    station_last_sample: IntGaugeVec,
    predictions: IntCounterVec,
    aftershock_probability: Histogram,
    queries: IntCounterVec,
    query_seconds: Histogram,
    shap_task_seconds: Histogram,
    band_mass: GaugeVec,
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("registered once");
    c
}

fn histogram(r: &Registry, name: &str, help: &str, labels: &[&str], b: &[f64]) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(b.to_vec()), labels)
        .expect("valid metric");
    r.register(Box::new(h.clone())).expect("registered once");
    h
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("registered once");
    g
}

impl Metrics {
    /// A registry with every family, plus the process collector (CPU, memory, open fds).
    pub fn new() -> Arc<Self> {
        let r = Registry::new();
        #[cfg(target_os = "linux")]
        {
            let _ = r.register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ));
        }
        let s = ["stage"];
        let st = ["station"];
        let aftershock_probability = Histogram::with_opts(
            HistogramOpts::new(
                "quakelens_aftershock_probability",
                "CNN probability that a window is an aftershock (score distribution)",
            )
            .buckets((1..10).map(|i| i as f64 / 10.0).collect()),
        )
        .expect("valid metric");
        r.register(Box::new(aftershock_probability.clone()))
            .expect("registered once");
        let query_seconds = Histogram::with_opts(
            HistogramOpts::new("quakelens_query_duration_seconds", "SQL query wall time")
                .buckets(DURATION_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        r.register(Box::new(query_seconds.clone()))
            .expect("registered once");
        let shap_task_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "quakelens_shap_task_duration_seconds",
                "Time to explain one task message (a few windows)",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        r.register(Box::new(shap_task_seconds.clone()))
            .expect("registered once");
        Arc::new(Self {
            records_in: counter(&r, "quakelens_records_in_total", "Messages a stage consumed", &s),
            records_out: counter(
                &r,
                "quakelens_records_out_total",
                "Records a stage produced (miniSEED records relayed, windows, scores, rows written)",
                &s,
            ),
            records_failed: counter(
                &r,
                "quakelens_records_failed_total",
                "Inputs a stage could not use: dead letters plus windows dropped or left unscored",
                &s,
            ),
            dead_letters: counter(
                &r,
                "quakelens_dead_letters_total",
                "Messages a stage sent to the dead-letter topic",
                &s,
            ),
            batch_records: histogram(
                &r,
                "quakelens_batch_records",
                "Messages per consumed batch",
                &s,
                &BATCH_BUCKETS,
            ),
            batch_seconds: histogram(
                &r,
                "quakelens_batch_duration_seconds",
                "Time to process one batch, sends and acknowledgements included",
                &s,
                &DURATION_BUCKETS,
            ),
            window_latency: histogram(
                &r,
                "quakelens_window_latency_seconds",
                "From a window's last sample to the stage's output (scorer/forest: per window; lake: per message, by its newest window)",
                &s,
                &LATENCY_BUCKETS,
            ),
            consumer_lag: gauge(
                &r,
                "quakelens_consumer_lag_messages",
                "Messages behind the partition's high watermark (librdkafka statistics)",
                &["topic", "partition"],
            ),
            inference_seconds: histogram(
                &r,
                "quakelens_model_inference_seconds",
                "Wall time of one model call over a batch of windows",
                &["model"],
                &DURATION_BUCKETS,
            ),
            windows: counter(&r, "quakelens_windows_total", "Windows cut per station", &st),
            gap_runs: counter(
                &r,
                "quakelens_gap_runs_total",
                "Gaps filled inside windows, per station",
                &st,
            ),
            filled_samples: counter(
                &r,
                "quakelens_filled_samples_total",
                "Samples filled (gaps) inside windows, per station",
                &st,
            ),
            resampled_windows: counter(
                &r,
                "quakelens_resampled_windows_total",
                "Windows resampled to 100 Hz from another rate, per station",
                &st,
            ),
            late_samples: counter(
                &r,
                "quakelens_late_samples_total",
                "Samples that arrived after their window was cut, per station",
                &st,
            ),
            station_last_sample: gauge(
                &r,
                "quakelens_station_last_sample_timestamp_seconds",
                "Time of the newest sample received per station (Unix seconds)",
                &st,
            ),
            predictions: counter(
                &r,
                "quakelens_predictions_total",
                "CNN predictions per station and class (aftershock share = class ratio)",
                &["station", "class"],
            ),
            aftershock_probability,
            queries: counter(
                &r,
                "quakelens_queries_total",
                "SQL queries by outcome (ok, refused, timeout, memory, error, unauthorized)",
                &["outcome"],
            ),
            query_seconds,
            shap_task_seconds,
            band_mass: {
                let g = GaugeVec::new(
                    Opts::new(
                        "quakelens_shap_band_mass_ratio",
                        "Share of the CNN's |SHAP| mass per frequency band, latest explained window per station",
                    ),
                    &["station", "band"],
                )
                .expect("valid metric");
                r.register(Box::new(g.clone())).expect("registered once");
                g
            },
            registry: r,
        })
    }

    /// The handle a stage counts with.
    pub fn stage(self: &Arc<Self>, stage: &'static str) -> StageMetrics {
        let l = [stage];
        StageMetrics {
            stage,
            records_in: self.records_in.with_label_values(&l),
            records_out: self.records_out.with_label_values(&l),
            records_failed: self.records_failed.with_label_values(&l),
            dead_letters: self.dead_letters.with_label_values(&l),
            all: Arc::clone(self),
        }
    }

    /// Consumer lag per partition, replacing what the last statistics said.
    pub fn set_consumer_lag(&self, lags: &[PartitionLag]) {
        self.consumer_lag.reset();
        for l in lags {
            self.consumer_lag
                .with_label_values(&[l.topic.as_str(), &l.partition.to_string()])
                .set(l.messages);
        }
    }

    /// One SQL query's outcome and duration.
    pub fn query(&self, outcome: &str, seconds: f64) {
        self.queries.with_label_values(&[outcome]).inc();
        self.query_seconds.observe(seconds);
    }

    /// The Prometheus text exposition of everything registered.
    pub fn encode(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!("encoding metrics: {e}");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// One stage's counters (pre-labelled) and its way to the station- and model-level families.
pub struct StageMetrics {
    pub stage: &'static str,
    pub records_in: IntCounter,
    pub records_out: IntCounter,
    pub records_failed: IntCounter,
    pub dead_letters: IntCounter,
    all: Arc<Metrics>,
}

impl StageMetrics {
    /// A stage's metrics in a registry of their own (embedded runs and tests).
    pub fn detached(stage: &'static str) -> Self {
        Metrics::new().stage(stage)
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.all
    }

    /// `n` messages went to the dead-letter topic (each is also a failed record).
    pub fn dead_lettered(&self, n: usize) {
        self.dead_letters.inc_by(n as u64);
        self.records_failed.inc_by(n as u64);
    }

    pub fn batch(&self, records: usize, seconds: f64) {
        let l = [self.stage];
        self.all
            .batch_records
            .with_label_values(&l)
            .observe(records as f64);
        self.all
            .batch_seconds
            .with_label_values(&l)
            .observe(seconds);
    }

    /// A window's output is done, `seconds` after its last sample.
    pub fn window_latency(&self, seconds: f64) {
        self.all
            .window_latency
            .with_label_values(&[self.stage])
            .observe(seconds.max(0.0));
    }

    pub fn inference(&self, model: &str, seconds: f64) {
        self.all
            .inference_seconds
            .with_label_values(&[model])
            .observe(seconds);
    }

    /// A window was cut for `station`, with its data-quality facts.
    pub fn window_cut(&self, station: &str, gap_runs: i32, filled: i32, resampled: bool) {
        let l = [station];
        self.all.windows.with_label_values(&l).inc();
        self.all
            .gap_runs
            .with_label_values(&l)
            .inc_by(gap_runs.max(0) as u64);
        self.all
            .filled_samples
            .with_label_values(&l)
            .inc_by(filled.max(0) as u64);
        if resampled {
            self.all.resampled_windows.with_label_values(&l).inc();
        }
    }

    pub fn late_samples(&self, station: &str, n: usize) {
        if n > 0 {
            self.all
                .late_samples
                .with_label_values(&[station])
                .inc_by(n as u64);
        }
    }

    /// The newest sample seen from `station` (keeps the later of old and new).
    pub fn station_seen(&self, station: &str, last_sample_ns: i64) {
        let g: IntGauge = self.all.station_last_sample.with_label_values(&[station]);
        let s = last_sample_ns.div_euclid(1_000_000_000);
        if s > g.get() {
            g.set(s);
        }
    }

    /// One SHAP task message explained in `seconds`.
    pub fn shap_task(&self, seconds: f64) {
        self.all.shap_task_seconds.observe(seconds);
    }

    /// The latest explained window's share of |SHAP| mass in `band` at `station`.
    pub fn band_mass(&self, station: &str, band: &str, ratio: f64) {
        self.all
            .band_mass
            .with_label_values(&[station, band])
            .set(ratio);
    }

    /// One CNN prediction for `station`.
    pub fn prediction(&self, station: &str, p_aftershock: f32) {
        let class = if p_aftershock >= 0.5 {
            "aftershock"
        } else {
            "foreshock"
        };
        self.all
            .predictions
            .with_label_values(&[station, class])
            .inc();
        self.all.aftershock_probability.observe(p_aftershock as f64);
    }

    /// In / out / failed / dead letters, for the health answer.
    pub fn snapshot(&self) -> CountersSnapshot {
        CountersSnapshot {
            records_in: self.records_in.get(),
            records_out: self.records_out.get(),
            records_failed: self.records_failed.get(),
            dead_letters: self.dead_letters.get(),
            batches: self
                .all
                .batch_records
                .with_label_values(&[self.stage])
                .get_sample_count(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CountersSnapshot {
    pub records_in: u64,
    pub records_out: u64,
    pub records_failed: u64,
    pub dead_letters: u64,
    pub batches: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_appear_once_used_with_bounded_labels() {
        let m = Metrics::new();
        let w = m.stage("windower");
        w.records_in.inc_by(3);
        w.batch(3, 0.01);
        w.window_cut("XX.A.00.HH", 2, 17, true);
        w.station_seen("XX.A.00.HH", 1_700_000_000_900_000_000);
        w.station_seen("XX.A.00.HH", 1_600_000_000_000_000_000);
        let s = m.stage("scorer");
        s.prediction("XX.A.00.HH", 0.9);
        s.prediction("XX.A.00.HH", 0.1);
        m.set_consumer_lag(&[PartitionLag {
            topic: "windows".into(),
            partition: 2,
            messages: 41,
        }]);
        let text = m.encode();
        for line in [
            "quakelens_records_in_total{stage=\"windower\"} 3",
            "quakelens_batch_records_count{stage=\"windower\"} 1",
            "quakelens_gap_runs_total{station=\"XX.A.00.HH\"} 2",
            "quakelens_filled_samples_total{station=\"XX.A.00.HH\"} 17",
            "quakelens_resampled_windows_total{station=\"XX.A.00.HH\"} 1",
            "quakelens_station_last_sample_timestamp_seconds{station=\"XX.A.00.HH\"} 1700000000",
            "quakelens_predictions_total{class=\"aftershock\",station=\"XX.A.00.HH\"} 1",
            "quakelens_aftershock_probability_count 2",
            "quakelens_consumer_lag_messages{partition=\"2\",topic=\"windows\"} 41",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        // Every family, once used, is in FAMILIES and vice versa.
        w.inference("cnn", 0.1);
        w.window_latency(1.0);
        w.late_samples("XX.A.00.HH", 1);
        m.query("ok", 0.01);
        w.shap_task(0.01);
        w.band_mass("XX.A.00.HH", "0-5Hz", 0.5);
        let text = m.encode();
        let names: std::collections::BTreeSet<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .filter(|n| n.starts_with("quakelens_"))
            .collect();
        assert_eq!(names, FAMILIES.iter().copied().collect());
        // Unused families stay out of the scrape.
        let m = Metrics::new();
        let w = m.stage("windower");
        w.batch(3, 0.01);
        let text = m.encode();
        assert!(!text.contains("quakelens_model_inference_seconds"));
        assert_eq!(w.snapshot().batches, 1);
        m.set_consumer_lag(&[]);
        assert!(!m.encode().contains("quakelens_consumer_lag_messages{"));
    }
}
