//! One processed window: everything the `windows` and `features` tables store about it.

/// A window with its spectrogram, features and (when a catalogue knows it) its label.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowRecord {
    pub window_id: String,
    pub network: String,
    pub station: String,
    pub location: String,
    /// Band and instrument code, e.g. `HH`.
    pub band: String,
    pub start_ns: i64,
    pub end_ns: i64,
    pub onset_ns: Option<i64>,
    /// `event` or `sliding`.
    pub mode: String,
    pub trigger_ratio: Option<f64>,
    pub sample_rate: f64,
    pub source_rate: f64,
    pub resampled: bool,
    pub gap_runs: i32,
    pub filled_samples: i32,
    /// Component order of the spectrogram channels and features, e.g. `NEZ`.
    pub channel_order: String,
    pub event_id: Option<String>,
    /// 0 = foreshock, 1 = aftershock.
    pub label: Option<i32>,
    pub magnitude: Option<f64>,
    /// `[channel][freq][frame]`, flattened.
    pub spectrogram: Vec<f32>,
    /// The 69 waveform features, in `quakelens_signal::features::column_names()` order.
    pub features: Vec<f64>,
}

impl WindowRecord {
    /// `NET.STA.LOC.BAND`, the stream partition value.
    pub fn stream(&self) -> String {
        format!(
            "{}.{}.{}.{}",
            self.network, self.station, self.location, self.band
        )
    }

    /// UTC day of the window start, the day partition value.
    pub fn day(&self) -> String {
        quakelens_signal::time::day_of(self.start_ns)
    }
}
