//! `windows`, `scores`, `magnitudes`, `shap.results` → the lake's Delta tables, each row once.
//!
//! Each batch becomes one Delta commit per table, and each commit carries, per input topic
//! partition, a `txn` action (app id `<group>/<topic>/<partition>`, version = the next offset to
//! read): the sink's own replays (a crash between the commit and the Kafka commit, a broker
//! restart) are recognised from the log on start and skipped table by table, without loading
//! the lake's keys. Kafka offsets are stored only after the commits.
//!
//! Upstream stages deliver at least once too: a windower or scorer that restarts sends some
//! rows again as new messages. Those are dropped by key against the keys written within a
//! horizon of arrival time ([`recent::RecentKeys`], warmed on start from the files the tables
//! added within the horizon), so memory and start-up follow the write rate, not the history.
//!
//! CNN explanations split into parts wait in [`PartsBuffer`] until their window is complete;
//! positions before a held part are not stored in Kafka, so a restart brings the part back and
//! the message is read again for its parts only.

mod latency;
mod recent;

/// Runs a lake call on `$sink.writer`, retrying transient failures (an unreachable store, a
/// lost commit race) with backoff for up to the sink's `retry_for`.
macro_rules! retrying {
    ($sink:expr, |$w:ident| $call:expr) => {{
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            let $w = &mut $sink.writer;
            match $call.await {
                Ok(v) => break Ok(v),
                Err(e) if e.is_transient() && started.elapsed() < $sink.cfg.retry_for => {
                    tracing::warn!(attempt, "lake unavailable, retrying: {e}");
                    let pause =
                        quakelens_transport::backoff(attempt).max(Duration::from_millis(200));
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
                Err(e) => break Err(StageError::from(e)),
            }
        }
    }};
}

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use quakelens_explain::image::Part;
use quakelens_lake::{
    CnnShapRecord, ForestShapRecord, Keyed, LakeFormat, LakeLocation, LakeWriter, MagnitudeRecord,
    ScoreRecord, SpectrogramAxes, Table, Txn, WindowRecord,
};
use quakelens_transport::topics::{header, DEAD_LETTER, MAGNITUDES, SCORES, SHAP_RESULTS, WINDOWS};
use quakelens_transport::{Incoming, Outgoing, Position, Transport};

pub use latency::{Latencies, LatencySummary};
pub use recent::{key_hash, RecentKeys};

use super::cnn_parts::{Origin, PartsBuffer};
use super::explainer::record_band_shares;
use super::{after_batch, dead_letter, now_ns, Stage, StageError, StageMetrics};
use crate::messages::{
    decode_cnn_shap, decode_forest_shap, decode_magnitudes, decode_scores, decode_windows,
    encode_cnn_shap, is_cnn_result,
};

const STAGE: &str = "lake";

/// With `partition_keys`: days of keys kept before the newest day being written.
const KEPT_DAYS: i64 = 1;

/// Days since the epoch of a window start (the day partition, as a number).
fn day_number(start_ns: i64) -> i64 {
    start_ns.div_euclid(86_400 * 1_000_000_000)
}

/// How the sink names its positions and how far back it looks for upstream duplicates.
#[derive(Clone, Debug)]
pub struct LakeSinkConfig {
    /// The consumer group: the prefix of the sink's `txn` app ids.
    pub group: String,
    pub batch: usize,
    /// Rows written within this much arrival time are checked for upstream duplicates.
    pub dedup_horizon: Duration,
    /// A store that stays unreachable this long stops the sink (it restarts from the log).
    pub retry_for: Duration,
    /// Compact the tables in the background this often (None: leave it to `lake optimize`).
    pub compaction: Option<Compaction>,
    /// Before a table's first rows in a `day` × `stream` partition, load the keys that
    /// partition holds and drop rows already there, whenever they were written (the embedded
    /// run: rerunning an archive writes nothing twice). Keys of days long past are forgotten
    /// (see `learn`), so memory follows the days in flight.
    pub partition_keys: bool,
    /// Checkpoint the tables when the sink opens (those whose log grew an interval past their
    /// last checkpoint), never as commits reach `delta.checkpointInterval`: for a batch run,
    /// so that a checkpoint's transient memory never adds to the run's working set.
    pub checkpoint_at_open: bool,
}

/// Periodic compaction by the sink: every `every`, all tables are bin-packed to files of about
/// `target_bytes`, in a task of its own so commits go on meanwhile (an optimize only removes
/// files it rewrote, so it does not conflict with appends).
#[derive(Clone, Copy, Debug)]
pub struct Compaction {
    pub every: Duration,
    pub target_bytes: u64,
}

impl LakeSinkConfig {
    pub fn new(group: &str) -> Self {
        Self {
            group: group.to_string(),
            batch: 500,
            dedup_horizon: Duration::from_secs(6 * 3600),
            retry_for: Duration::from_secs(600),
            compaction: None,
            partition_keys: false,
            checkpoint_at_open: false,
        }
    }
}

/// Rows of one batch, per table, after every filter.
#[derive(Default)]
struct Rows {
    windows: Vec<WindowRecord>,
    features: Vec<WindowRecord>,
    scores: Vec<ScoreRecord>,
    magnitudes: Vec<MagnitudeRecord>,
    /// Explanations with the feature names their values follow.
    forest_shap: Vec<(Vec<String>, Vec<ForestShapRecord>)>,
    cnn_shap: Vec<CnnShapRecord>,
}

impl Rows {
    fn count(&self) -> usize {
        self.windows.len()
            + self.features.len()
            + self.scores.len()
            + self.magnitudes.len()
            + self.forest_shap.iter().map(|(_, r)| r.len()).sum::<usize>()
            + self.cnn_shap.len()
    }
}

pub struct LakeSinkStage {
    writer: LakeWriter,
    cfg: LakeSinkConfig,
    /// The next offset not yet in each table, per topic partition (from the log, then kept).
    committed: HashMap<(Table, String, i32), i64>,
    recent: HashMap<Table, RecentKeys>,
    /// With `partition_keys`: the keys of the partitions loaded, per table, each with its
    /// partition's day (days since the epoch), and which (table, day, stream) those are.
    known: HashMap<Table, HashMap<u64, i64>>,
    loaded: std::collections::HashSet<(Table, i64, String)>,
    /// Where CNN explanation values sit (None: the lake's spectrograms are not the study's).
    axes: Option<SpectrogramAxes>,
    /// CNN explanations split into parts, waiting for the rest of their window.
    pub parts: PartsBuffer,
    /// After the last message read, per (topic, partition); stored once no held part is before.
    consumed: BTreeMap<(String, i32), i64>,
    /// Seconds from window end to its row being in the lake.
    pub latencies: Latencies,
    pub duplicates_skipped: u64,
    /// Rows written per table, and files added, since the sink started.
    pub rows_written: HashMap<Table, u64>,
    pub files_added: u64,
    location: LakeLocation,
    last_compaction: Instant,
    compacting: Option<tokio::task::JoinHandle<()>>,
}

impl LakeSinkStage {
    /// Opens (or creates) the lake for windows of `format` and warms the recent keys.
    pub async fn open(
        location: &LakeLocation,
        format: LakeFormat,
        cfg: LakeSinkConfig,
    ) -> Result<Self, StageError> {
        // The horizon reaches back from the moment the sink starts, however long opening takes.
        let since = std::time::SystemTime::now() - cfg.dedup_horizon;
        let started = Instant::now();
        let mut writer = LakeWriter::open(location, format).await?;
        if cfg.checkpoint_at_open {
            writer.checkpoint_at_open().await?;
        }
        let mut recent = HashMap::new();
        let mut warmed = 0;
        for table in Table::ALL {
            let mut keys = RecentKeys::new(cfg.dedup_horizon);
            let now = Instant::now();
            for (window, model) in writer.recent_keys(table, since).await? {
                keys.insert(key_hash(&window, &model), now);
                warmed += 1;
            }
            recent.insert(table, keys);
        }
        tracing::info!(
            keys = warmed,
            seconds = started.elapsed().as_secs_f64(),
            "lake sink: keys written within the dedup horizon loaded"
        );
        Ok(Self {
            writer,
            axes: crate::transform::spectrogram_axes(format.shape).ok(),
            cfg,
            committed: HashMap::new(),
            recent,
            known: HashMap::new(),
            loaded: Default::default(),
            parts: PartsBuffer::default(),
            consumed: BTreeMap::new(),
            latencies: Latencies::default(),
            duplicates_skipped: 0,
            rows_written: HashMap::new(),
            files_added: 0,
            location: location.clone(),
            last_compaction: Instant::now(),
            compacting: None,
        })
    }

    /// Starts a background compaction when one is due and none is running. Its failure is
    /// logged and tried again at the next interval: compaction never stops the sink.
    fn maybe_compact(&mut self) {
        let Some(c) = self.cfg.compaction else {
            return;
        };
        if self.last_compaction.elapsed() < c.every
            || self.compacting.as_ref().is_some_and(|h| !h.is_finished())
        {
            return;
        }
        self.last_compaction = Instant::now();
        let location = self.location.clone();
        self.compacting = Some(tokio::spawn(async move {
            let started = Instant::now();
            match quakelens_lake::optimize(&location, &[], c.target_bytes).await {
                Ok(done) => {
                    let before: usize = done.iter().map(|o| o.files_before).sum();
                    let after: usize = done.iter().map(|o| o.files_after).sum();
                    tracing::info!(
                        files_before = before,
                        files_after = after,
                        seconds = started.elapsed().as_secs_f64(),
                        "lake sink: tables compacted"
                    );
                }
                Err(e) => tracing::warn!(
                    "lake sink: compaction failed (next try at the next interval): {e}"
                ),
            }
        }));
    }

    /// Waits for a running compaction (at shutdown, so a stopped sink leaves none half done
    /// by its own choice; a kill in the middle leaves a valid table all the same).
    pub async fn finish_compaction(&mut self) {
        if let Some(h) = self.compacting.take() {
            let _ = h.await;
        }
    }

    fn app_id(&self, topic: &str, partition: i32) -> String {
        format!("{}/{topic}/{partition}", self.cfg.group)
    }

    /// Whether `m`'s rows for `table` are in the table already (the log says so).
    async fn seen(&mut self, table: Table, m: &Incoming) -> Result<bool, StageError> {
        let next = self.committed_version(table, &m.topic, m.partition).await?;
        Ok(m.offset < next)
    }

    /// The next offset of `topic`/`partition` that `table` has not committed (0: none yet),
    /// read from the log once and then kept up to date by this sink's own commits.
    async fn committed_version(
        &mut self,
        table: Table,
        topic: &str,
        partition: i32,
    ) -> Result<i64, StageError> {
        let key = (table, topic.to_string(), partition);
        if let Some(&v) = self.committed.get(&key) {
            return Ok(v);
        }
        let app = self.app_id(topic, partition);
        let v = retrying!(self, |w| w.txn_version(table, &app))?.unwrap_or(0);
        self.committed.insert(key, v);
        Ok(v)
    }

    /// The positions a commit to `table` records for `topic`'s partitions in the batch. A
    /// position never moves back: a batch of replayed messages (all below what the log holds)
    /// records what the log already says, or the next batch would take the rest of the old
    /// commit for new and write it twice.
    async fn txns_for(
        &mut self,
        table: Table,
        topic: &str,
        after: &[Position],
    ) -> Result<Vec<Txn>, StageError> {
        let mut txns = Vec::new();
        for p in after.iter().filter(|p| p.topic == topic) {
            let known = self.committed_version(table, topic, p.partition).await?;
            txns.push(Txn {
                app_id: self.app_id(topic, p.partition),
                version: p.offset.max(known),
            });
        }
        Ok(txns)
    }

    /// With `partition_keys`: loads the keys of the partitions of `rows` not loaded yet, after
    /// forgetting those of days more than [`KEPT_DAYS`] before the newest that `rows` do not
    /// touch. Input arrives in time order, so what is forgotten is rarely needed again, and a
    /// partition needed again is loaded again: memory follows the days in flight, not the run.
    async fn learn<R: Keyed>(&mut self, table: Table, rows: &[R]) -> Result<(), StageError> {
        if !self.cfg.partition_keys || rows.is_empty() {
            return Ok(());
        }
        let mut wanted: BTreeMap<(i64, String), String> = BTreeMap::new();
        for r in rows {
            let k = r.key();
            let day = day_number(k.start_ns);
            if !wanted.contains_key(&(day, k.stream().clone())) {
                wanted.insert((day, k.stream()), k.day());
            }
        }
        let newest = wanted.keys().map(|(d, _)| *d).max().unwrap_or(i64::MIN);
        let days: std::collections::BTreeSet<i64> = wanted.keys().map(|(d, _)| *d).collect();
        let stale = |d: i64| d < newest - KEPT_DAYS && !days.contains(&d);
        self.loaded.retain(|(t, d, _)| *t != table || !stale(*d));
        if let Some(known) = self.known.get_mut(&table) {
            known.retain(|_, d| !stale(*d));
        }
        for ((day, stream), day_name) in wanted {
            if self.loaded.contains(&(table, day, stream.clone())) {
                continue;
            }
            let found = retrying!(self, |w| w.partition_keys(table, &day_name, &stream))?;
            self.known
                .entry(table)
                .or_default()
                .extend(found.iter().map(|(w, m)| (key_hash(w, m), day)));
            self.loaded.insert((table, day, stream));
        }
        Ok(())
    }

    /// Keeps only rows whose key was not written within the horizon (nor earlier in `rows`,
    /// nor, with `partition_keys`, ever).
    fn fresh<T>(&mut self, table: Table, rows: Vec<T>, key: impl Fn(&T) -> u64) -> Vec<T> {
        let keys = self
            .recent
            .get_mut(&table)
            .expect("every table has its keys");
        let known = self.known.get(&table);
        let before = rows.len();
        let mut batch = std::collections::HashSet::new();
        let kept: Vec<T> = rows
            .into_iter()
            .filter(|r| {
                let k = key(r);
                !keys.contains(k) && !known.is_some_and(|n| n.contains_key(&k)) && batch.insert(k)
            })
            .collect();
        self.duplicates_skipped += (before - kept.len()) as u64;
        kept
    }

    /// Sorts one batch's messages into table rows: decoded, checked against the lake's
    /// format, replays and upstream duplicates removed. Messages that cannot be used become
    /// dead letters; the latencies of what will be written are returned.
    async fn sort(
        &mut self,
        batch: &[Incoming],
        metrics: &StageMetrics,
        dead: &mut Vec<Outgoing>,
    ) -> Result<(Rows, Vec<i64>), StageError> {
        let mut rows = Rows::default();
        let mut ends = Vec::new();
        let format = *self.writer.format();
        for m in batch {
            let Some(payload) = m.payload.as_deref() else {
                dead.push(dead_letter(STAGE, m, "empty message (no payload)"));
                continue;
            };
            let taken = match m.topic.as_str() {
                WINDOWS => {
                    let (new_w, new_f) = (
                        !self.seen(Table::Windows, m).await?,
                        !self.seen(Table::Features, m).await?,
                    );
                    if !(new_w || new_f) {
                        self.duplicates_skipped += 1;
                        continue;
                    }
                    match decode_windows(payload) {
                        Ok((f, _)) if f != format => Err(format!(
                            "windows of {} spectrograms of {:?} with {} features, this lake stores {} spectrograms of {:?} with {} features",
                            f.input, f.shape, f.features, format.input, format.shape, format.features
                        )),
                        Ok((_, w)) => {
                            if new_f {
                                rows.features.extend(w.iter().cloned());
                            }
                            if new_w {
                                rows.windows.extend(w);
                            }
                            Ok(())
                        }
                        Err(e) => Err(e.to_string()),
                    }
                }
                SCORES if !self.seen(Table::Scores, m).await? => decode_scores(payload)
                    .map(|r| rows.scores.extend(r))
                    .map_err(|e| e.to_string()),
                MAGNITUDES if !self.seen(Table::Magnitudes, m).await? => decode_magnitudes(payload)
                    .map(|r| rows.magnitudes.extend(r))
                    .map_err(|e| e.to_string()),
                SHAP_RESULTS if is_cnn_result(payload) => {
                    let replayed = self.seen(Table::CnnShap, m).await?;
                    match (&self.axes, decode_cnn_shap(payload)) {
                        (None, _) => Err(
                            "CNN explanations for a lake whose spectrograms are not the study's"
                                .into(),
                        ),
                        (_, Err(e)) => Err(e.to_string()),
                        (Some(axes), Ok(r)) => {
                            let cells = axes.cells();
                            match r.iter().find(|(c, _)| c.values.len() != cells) {
                                Some((c, _)) => Err(format!(
                                    "window {}: {} SHAP values, the lake's spectrograms have {cells} cells",
                                    c.key.window_id,
                                    c.values.len()
                                )),
                                None => self.take_cnn(r, m, replayed, &mut rows.cnn_shap, metrics),
                            }
                        }
                    }
                }
                SHAP_RESULTS if !self.seen(Table::ForestShap, m).await? => {
                    decode_forest_shap(payload)
                        .map(|(r, names)| {
                            match rows.forest_shap.iter_mut().find(|(n, _)| *n == names) {
                                Some((_, all)) => all.extend(r),
                                None => rows.forest_shap.push((names, r)),
                            }
                        })
                        .map_err(|e| e.to_string())
                }
                SCORES | MAGNITUDES | SHAP_RESULTS => {
                    self.duplicates_skipped += 1;
                    continue;
                }
                other => Err(format!("unexpected topic {other}")),
            };
            match taken {
                Ok(()) => ends.extend(
                    m.header(header::WINDOW_END_NS)
                        .and_then(|v| std::str::from_utf8(v).ok()?.parse::<i64>().ok()),
                ),
                Err(e) => dead.push(dead_letter(STAGE, m, &format!("{} message: {e}", m.topic))),
            }
        }
        self.learn(Table::Windows, &rows.windows).await?;
        self.learn(Table::Features, &rows.features).await?;
        self.learn(Table::Scores, &rows.scores).await?;
        self.learn(Table::Magnitudes, &rows.magnitudes).await?;
        for (_, group) in &rows.forest_shap {
            self.learn(Table::ForestShap, group).await?;
        }
        self.learn(Table::CnnShap, &rows.cnn_shap).await?;
        let id = |w: &WindowRecord| key_hash(&w.window_id, "");
        rows.windows = self.fresh(Table::Windows, std::mem::take(&mut rows.windows), id);
        rows.features = self.fresh(Table::Features, std::mem::take(&mut rows.features), id);
        rows.scores = self.fresh(Table::Scores, std::mem::take(&mut rows.scores), |r| {
            key_hash(&r.key.window_id, &r.model_hash)
        });
        rows.magnitudes = self.fresh(
            Table::Magnitudes,
            std::mem::take(&mut rows.magnitudes),
            |r| key_hash(&r.key.window_id, &r.model_hash),
        );
        let mut forest = std::mem::take(&mut rows.forest_shap);
        for (_, group) in forest.iter_mut() {
            *group = self.fresh(Table::ForestShap, std::mem::take(group), |r| {
                key_hash(&r.key.window_id, &r.model_hash)
            });
        }
        rows.forest_shap = forest;
        rows.cnn_shap = self.fresh(Table::CnnShap, std::mem::take(&mut rows.cnn_shap), |r| {
            key_hash(&r.key.window_id, &r.model_hash)
        });
        Ok((rows, ends))
    }

    /// Commits each table that has rows, with the positions of its topic's partitions.
    async fn commit(&mut self, rows: Rows, after: &[Position]) -> Result<(), StageError> {
        let now = Instant::now();
        let Rows {
            windows,
            features,
            scores,
            magnitudes,
            forest_shap,
            cnn_shap,
        } = rows;
        if !windows.is_empty() {
            let t = self.txns_for(Table::Windows, WINDOWS, after).await?;
            let c = retrying!(self, |w| w.write_windows(&windows, &t))?;
            self.count(Table::Windows, c);
            self.committed_up_to(Table::Windows, &t);
            self.remember(
                Table::Windows,
                &windows,
                |r| key_hash(&r.window_id, ""),
                now,
            );
        }
        if !features.is_empty() {
            let t = self.txns_for(Table::Features, WINDOWS, after).await?;
            let c = retrying!(self, |w| w.write_features(&features, &t))?;
            self.count(Table::Features, c);
            self.committed_up_to(Table::Features, &t);
            self.remember(
                Table::Features,
                &features,
                |r| key_hash(&r.window_id, ""),
                now,
            );
        }
        if !scores.is_empty() {
            let t = self.txns_for(Table::Scores, SCORES, after).await?;
            let c = retrying!(self, |w| w.write_scores(&scores, &t))?;
            self.count(Table::Scores, c);
            self.committed_up_to(Table::Scores, &t);
            self.remember(
                Table::Scores,
                &scores,
                |r| key_hash(&r.key.window_id, &r.model_hash),
                now,
            );
        }
        if !magnitudes.is_empty() {
            let t = self.txns_for(Table::Magnitudes, MAGNITUDES, after).await?;
            let c = retrying!(self, |w| w.write_magnitudes(&magnitudes, &t))?;
            self.count(Table::Magnitudes, c);
            self.committed_up_to(Table::Magnitudes, &t);
            self.remember(
                Table::Magnitudes,
                &magnitudes,
                |r| key_hash(&r.key.window_id, &r.model_hash),
                now,
            );
        }
        if forest_shap.iter().any(|(_, r)| !r.is_empty()) {
            let t = self
                .txns_for(Table::ForestShap, SHAP_RESULTS, after)
                .await?;
            let c = retrying!(self, |w| w.write_forest_shap(&forest_shap, &t))?;
            self.count(Table::ForestShap, c);
            self.committed_up_to(Table::ForestShap, &t);
            for (_, group) in &forest_shap {
                self.remember(
                    Table::ForestShap,
                    group,
                    |r| key_hash(&r.key.window_id, &r.model_hash),
                    now,
                );
            }
        }
        if let (false, Some(axes)) = (cnn_shap.is_empty(), self.axes.clone()) {
            let t = self.txns_for(Table::CnnShap, SHAP_RESULTS, after).await?;
            let c = retrying!(self, |w| w.write_cnn_shap(&cnn_shap, &axes, &t))?;
            self.count(Table::CnnShap, c);
            self.committed_up_to(Table::CnnShap, &t);
            self.remember(
                Table::CnnShap,
                &cnn_shap,
                |r| key_hash(&r.key.window_id, &r.model_hash),
                now,
            );
        }
        Ok(())
    }

    fn count(&mut self, table: Table, c: quakelens_lake::Committed) {
        self.files_added += c.files as u64;
        *self.rows_written.entry(table).or_default() += c.rows as u64;
    }

    fn committed_up_to(&mut self, table: Table, txns: &[Txn]) {
        for t in txns {
            let mut parts = t.app_id.rsplitn(3, '/');
            let (Some(p), Some(topic)) = (parts.next(), parts.next()) else {
                continue;
            };
            if let Ok(p) = p.parse::<i32>() {
                self.committed
                    .insert((table, topic.to_string(), p), t.version);
            }
        }
    }

    /// Keeps the keys of rows just written: for the dedup horizon and, with
    /// `partition_keys`, with their partition's day.
    fn remember<R: Keyed>(
        &mut self,
        table: Table,
        rows: &[R],
        key: impl Fn(&R) -> u64,
        now: Instant,
    ) {
        let recent = self
            .recent
            .get_mut(&table)
            .expect("every table has its keys");
        let mut known = self
            .cfg
            .partition_keys
            .then(|| self.known.entry(table).or_default());
        for r in rows {
            let k = key(r);
            recent.insert(k, now);
            if let Some(known) = known.as_mut() {
                known.insert(k, day_number(r.key().start_ns));
            }
        }
    }

    /// Keys held for the dedup horizon, all tables (bounded by rate × horizon).
    pub fn recent_keys(&self) -> usize {
        self.recent.values().map(RecentKeys::len).sum()
    }
}

impl Stage for LakeSinkStage {
    fn batch_size(&self) -> usize {
        self.cfg.batch
    }

    async fn step<T: Transport>(
        &mut self,
        t: &T,
        batch: Vec<Incoming>,
        metrics: &StageMetrics,
    ) -> Result<(), StageError> {
        for (topic, partition) in t.take_revoked() {
            // Another sink owns it now: its positions may move, its parts are replayed there.
            self.committed
                .retain(|(_, to, p), _| !(to == &topic && *p == partition));
            self.parts.forget_partition(&topic, partition);
            self.consumed.remove(&(topic, partition));
        }
        if batch.is_empty() {
            return Ok(());
        }
        let mut dead = Vec::new();
        let (rows, ends) = self.sort(&batch, metrics, &mut dead).await?;
        let fresh = rows.count();
        let after = after_batch(&batch);
        self.commit(rows, &after).await?;
        crate::failpoint::pass(crate::failpoint::LAKE_AFTER_COMMIT);
        let now = now_ns();
        for &e in &ends {
            let seconds = (now - e) as f64 / 1e9;
            metrics.window_latency(seconds);
            self.latencies.record(seconds);
        }
        dead.extend(self.expired_parts());
        metrics.records_out.inc_by(fresh as u64);
        metrics.dead_lettered(dead.len());
        t.send(dead).await?;
        for p in after {
            self.consumed.insert((p.topic, p.partition), p.offset);
        }
        t.store(&self.positions())?;
        self.maybe_compact();
        Ok(())
    }
}

impl LakeSinkStage {
    /// CNN explanations of a message: whole windows go on (unless `replayed`: they are in the
    /// lake); parts wait in the buffer until their window is complete.
    fn take_cnn(
        &mut self,
        rows: Vec<(CnnShapRecord, Part)>,
        m: &Incoming,
        replayed: bool,
        out: &mut Vec<CnnShapRecord>,
        metrics: &StageMetrics,
    ) -> Result<(), String> {
        for (record, part) in rows {
            if part == Part::WHOLE {
                if !replayed {
                    out.push(record);
                }
                continue;
            }
            let origin = Origin {
                topic: m.topic.clone(),
                partition: m.partition,
                offset: m.offset,
            };
            if let Some(whole) = self.parts.add(record, part, origin)? {
                // No worker saw this window whole: its band shares (the drift metric) are set here.
                if let Some(axes) = &self.axes {
                    record_band_shares(metrics, &whole, &axes.freqs_hz, axes.times_s.len());
                }
                out.push(whole);
            }
        }
        Ok(())
    }

    /// Windows whose parts waited too long, as dead letters (their parts, re-encoded).
    fn expired_parts(&mut self) -> Vec<Outgoing> {
        self.parts
            .expired()
            .into_iter()
            .map(|w| {
                let got = w.parts.len();
                let rows: Vec<(CnnShapRecord, Part)> = w
                    .parts
                    .into_iter()
                    .map(|(index, (r, _))| {
                        (
                            r,
                            Part {
                                index,
                                count: w.count,
                            },
                        )
                    })
                    .collect();
                let window = rows[0].0.key.window_id.clone();
                let reason = format!(
                    "CNN explanation of window {window}: {got} of {} parts after {} s",
                    w.count,
                    self.parts.timeout.as_secs()
                );
                tracing::error!(window, "{reason}");
                Outgoing::new(DEAD_LETTER, window, encode_cnn_shap(&rows))
                    .header(header::ERROR, reason)
                    .header(header::STAGE, STAGE)
            })
            .collect()
    }

    /// What may be stored in Kafka: everything read, except from the first held part on.
    fn positions(&self) -> Vec<Position> {
        let held = self.parts.held();
        self.consumed
            .iter()
            .map(|((topic, partition), &after)| Position {
                topic: topic.clone(),
                partition: *partition,
                offset: held
                    .get(&(topic.clone(), *partition))
                    .map_or(after, |&h| h.min(after)),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use quakelens_lake::{Lake, LakeLocation};
    use quakelens_transport::memory::MemoryBroker;
    use quakelens_transport::topics;

    use super::*;
    use crate::messages::encode_windows;
    use crate::messages::fixtures::{format, window};

    /// Window `i` as one `windows` message at `offset` of `partition`.
    fn message(partition: i32, offset: i64, i: usize) -> Incoming {
        Incoming {
            topic: WINDOWS.into(),
            partition,
            offset,
            key: Some(b"XX.STA..HH".to_vec()),
            payload: Some(encode_windows(&[window(i)], &format())),
            headers: Vec::new(),
            timestamp_ms: None,
        }
    }

    async fn sink(lake: &LakeLocation) -> LakeSinkStage {
        let mut cfg = LakeSinkConfig::new("g");
        // No upstream-duplicate filter: positions alone must keep replays out.
        cfg.dedup_horizon = Duration::ZERO;
        LakeSinkStage::open(lake, format(), cfg).await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restart_that_replays_only_old_messages_of_a_partition_keeps_its_position() {
        let dir = tempfile::tempdir().unwrap();
        let lake = LakeLocation::local(dir.path()).unwrap();
        let broker = MemoryBroker::new();
        for (t, p) in topics::ALL {
            broker.create_topic(t, p);
        }
        let t = broker.transport(&[WINDOWS]);
        let metrics = StageMetrics::detached(STAGE);
        // The first sink commits offsets 0..13 of partition 4, then dies before Kafka's commit.
        let mut first = sink(&lake).await;
        let batch = (0..13).map(|o| message(4, o, o as usize)).collect();
        first.step(&t, batch, &metrics).await.unwrap();
        drop(first);

        // Its successor replays 4..10 of partition 4 (all in the lake) beside a new window of
        // partition 0, then the rest of partition 4's old messages.
        let mut second = sink(&lake).await;
        let mut batch: Vec<Incoming> = (4..10).map(|o| message(4, o, o as usize)).collect();
        batch.push(message(0, 0, 100));
        second.step(&t, batch, &metrics).await.unwrap();
        let mut writer = LakeWriter::open(&lake, format()).await.unwrap();
        let version = writer.txn_version(Table::Windows, "g/windows/4").await;
        assert_eq!(version.unwrap(), Some(13), "the position moved back");
        let batch = (10..13).map(|o| message(4, o, o as usize)).collect();
        second.step(&t, batch, &metrics).await.unwrap();

        let lake = Lake::open(&lake).await.unwrap();
        let counts = lake
            .sql_table("SELECT count(*) AS n, count(DISTINCT window_id) AS ids FROM windows")
            .await
            .unwrap();
        assert!(counts.contains("| 14 | 14"), "{counts}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn partition_keys_of_past_days_are_forgotten_and_loaded_again_when_needed() {
        const DAY_NS: i64 = 86_400 * 1_000_000_000;
        let dir = tempfile::tempdir().unwrap();
        let lake = LakeLocation::local(dir.path()).unwrap();
        let broker = MemoryBroker::new();
        for (t, p) in topics::ALL {
            broker.create_topic(t, p);
        }
        let t = broker.transport(&[WINDOWS]);
        let metrics = StageMetrics::detached(STAGE);
        let mut cfg = LakeSinkConfig::new("run/a");
        cfg.dedup_horizon = Duration::ZERO;
        cfg.partition_keys = true;
        let mut sink = LakeSinkStage::open(&lake, format(), cfg).await.unwrap();
        // Window `i` starting on `day`, at offset `o` (a new offset: only the keys can tell).
        let on_day = |o: i64, i: usize, day: i64| {
            let mut w = window(i);
            w.start_ns = day * DAY_NS + i as i64;
            w.end_ns = w.start_ns + 25_000_000_000;
            Incoming {
                payload: Some(encode_windows(&[w], &format())),
                ..message(0, o, i)
            }
        };
        sink.step(&t, vec![on_day(0, 1, 0)], &metrics)
            .await
            .unwrap();
        sink.step(&t, vec![on_day(1, 2, 1)], &metrics)
            .await
            .unwrap();
        sink.step(&t, vec![on_day(2, 3, 3)], &metrics)
            .await
            .unwrap();
        // Days 0 and 1 are more than a day before day 3: only day 3's key is held.
        assert_eq!(sink.known[&Table::Windows].len(), 1);
        assert!(sink.loaded.iter().all(|(_, d, _)| *d == 3));
        // A late copy of day 0's window: its partition is loaded again and the copy dropped.
        sink.step(&t, vec![on_day(3, 1, 0)], &metrics)
            .await
            .unwrap();
        // Its window row and its features row.
        assert_eq!(sink.duplicates_skipped, 2);
        let lake = Lake::open(&lake).await.unwrap();
        let counts = lake
            .sql_table("SELECT count(*) AS n, count(DISTINCT window_id) AS ids FROM windows")
            .await
            .unwrap();
        assert!(counts.contains("| 3 | 3"), "{counts}");
    }

    fn raw(topic: &str, offset: i64, payload: Option<Vec<u8>>) -> Incoming {
        Incoming {
            topic: topic.into(),
            partition: 0,
            offset,
            key: Some(b"XX.STA..HH".to_vec()),
            payload,
            headers: Vec::new(),
            timestamp_ms: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn poison_is_dead_lettered_and_the_rest_of_its_batch_lands_and_is_committed() {
        use quakelens_lake::WindowKey;

        let dir = tempfile::tempdir().unwrap();
        let lake = LakeLocation::local(dir.path()).unwrap();
        let broker = MemoryBroker::new();
        for (t, p) in topics::ALL {
            broker.create_topic(t, p);
        }
        let t = broker.transport(&[WINDOWS, SCORES, SHAP_RESULTS]);
        let metrics = StageMetrics::detached(STAGE);
        let mut sink = sink(&lake).await;
        let junk: Vec<u8> = (0..500u32).map(|i| (i * 7919 % 251) as u8).collect();
        // A rolling deploy's windows: one frame fewer.
        let other = LakeFormat {
            shape: [3, 33, 152],
            ..format()
        };
        let mut narrow = window(7);
        narrow.spectrogram.truncate(other.spectrogram_len());
        let short = CnnShapRecord {
            key: WindowKey::of(&window(0)),
            model_hash: "0".repeat(16),
            method: "partition".into(),
            target: "margin".into(),
            budget: 40,
            seed: 0,
            output: 1.0,
            base_value: 0.0,
            values: vec![0.5; 10],
            batch: None,
        };
        let batch = vec![
            message(0, 0, 0),
            raw(WINDOWS, 1, Some(junk.clone())),
            raw(WINDOWS, 2, Some(encode_windows(&[narrow], &other))),
            raw(WINDOWS, 3, None),
            raw(SCORES, 0, Some(junk)),
            raw(
                SHAP_RESULTS,
                0,
                Some(encode_cnn_shap(&[(short, Part::WHOLE)])),
            ),
            message(0, 4, 1),
        ];
        sink.step(&t, batch, &metrics).await.unwrap();

        let dead = broker.messages(topics::DEAD_LETTER);
        let why: Vec<String> = dead
            .iter()
            .map(|m| String::from_utf8_lossy(m.header(header::ERROR).unwrap()).into_owned())
            .collect();
        assert_eq!(dead.len(), 5, "{why:#?}");
        assert!(dead
            .iter()
            .all(|m| m.header(header::STAGE) == Some(STAGE.as_bytes())));
        assert!(why[1].contains("this lake stores"), "{}", why[1]);
        assert!(why[2].contains("no payload"), "{}", why[2]);
        assert!(why[4].contains("10 SHAP values"), "{}", why[4]);
        // The good windows landed, and every position moved past the poison.
        let counts = Lake::open(&lake)
            .await
            .unwrap()
            .sql_table("SELECT count(*) AS n, count(DISTINCT window_id) AS ids FROM windows")
            .await
            .unwrap();
        assert!(counts.contains("| 2 | 2"), "{counts}");
        let stored = t.stored();
        for (topic, next) in [(WINDOWS, 5), (SCORES, 1), (SHAP_RESULTS, 1)] {
            assert_eq!(
                stored.get(&(topic.to_string(), 0)),
                Some(&next),
                "{stored:?}"
            );
        }
        let mut writer = LakeWriter::open(&lake, format()).await.unwrap();
        let version = writer.txn_version(Table::Windows, "g/windows/0").await;
        assert_eq!(version.unwrap(), Some(5));
    }
}
