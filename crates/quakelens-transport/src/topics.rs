//! Topic names and the message contracts on them (documented in `proto/README.md`).

/// miniSEED record bytes; key `NET.STA.LOC.CHA`.
pub const WAVEFORMS_RAW: &str = "waveforms.raw";
/// Arrow IPC stream (zstd): window identity, spectrograms and features.
pub const WINDOWS: &str = "windows";
/// Arrow IPC stream: CNN scores.
pub const SCORES: &str = "scores";
/// Arrow IPC stream: forest magnitudes.
pub const MAGNITUDES: &str = "magnitudes";
/// Explanation work items and results (the SHAP stage).
pub const SHAP_TASKS: &str = "shap.tasks";
pub const SHAP_RESULTS: &str = "shap.results";
/// Messages no stage could use, unchanged, with the reason in headers.
pub const DEAD_LETTER: &str = "dead-letter";
/// Windower progress per station (last chunk emitted), read back after a restart.
pub const WINDOWER_PROGRESS: &str = "windower.progress";

/// Every topic and its default partition count.
pub const ALL: [(&str, i32); 8] = [
    (WAVEFORMS_RAW, 6),
    (WINDOWS, 6),
    (SCORES, 3),
    (MAGNITUDES, 3),
    (SHAP_TASKS, 6),
    (SHAP_RESULTS, 3),
    (DEAD_LETTER, 1),
    (WINDOWER_PROGRESS, 6),
];

/// Header names.
pub mod header {
    /// Why a message is in the dead-letter topic.
    pub const ERROR: &str = "quakelens.error";
    /// Which stage put it there.
    pub const STAGE: &str = "quakelens.stage";
    /// Where it came from (`topic[partition]@offset`).
    pub const ORIGIN: &str = "quakelens.origin";
    /// End of a replayed stream: the windower flushes the station (value unused).
    pub const END_OF_STREAM: &str = "quakelens.eos";
    /// Window end time of the newest window in a message (ns), for latency accounting.
    pub const WINDOW_END_NS: &str = "quakelens.window_end_ns";
}
