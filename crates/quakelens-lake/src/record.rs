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
    /// Catalogue geometry when the source knows it (the study's datasets do; live streams don't).
    pub source: SourceAttributes,
    /// `[channel][freq][frame]`, flattened.
    pub spectrogram: Vec<f32>,
    /// The 69 waveform features, in `quakelens_signal::features::column_names()` order.
    pub features: Vec<f64>,
}

/// Catalogue facts about the event and station behind a window. The random forest may use
/// them as inputs (the study did); each is null when unknown.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SourceAttributes {
    pub p_travel_sec: Option<f64>,
    pub s_travel_sec: Option<f64>,
    pub source_depth_km: Option<f64>,
    pub source_latitude: Option<f64>,
    pub source_longitude: Option<f64>,
    pub receiver_latitude: Option<f64>,
    pub receiver_longitude: Option<f64>,
}

impl SourceAttributes {
    /// Column names in the `windows` table, in [`SourceAttributes::values`] order.
    pub const COLUMNS: [&'static str; 7] = [
        "p_travel_sec",
        "s_travel_sec",
        "source_depth_km",
        "source_latitude",
        "source_longitude",
        "receiver_latitude",
        "receiver_longitude",
    ];

    pub fn values(&self) -> [Option<f64>; 7] {
        [
            self.p_travel_sec,
            self.s_travel_sec,
            self.source_depth_km,
            self.source_latitude,
            self.source_longitude,
            self.receiver_latitude,
            self.receiver_longitude,
        ]
    }
}

/// The columns every table starts with: which window a row is about.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KeyRef<'a> {
    pub window_id: &'a str,
    pub network: &'a str,
    pub station: &'a str,
    pub location: &'a str,
    pub band: &'a str,
    pub start_ns: i64,
}

impl KeyRef<'_> {
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

/// Rows that belong to a window (and so to a day and stream partition).
pub trait Keyed {
    fn key(&self) -> KeyRef<'_>;
}

impl Keyed for WindowRecord {
    fn key(&self) -> KeyRef<'_> {
        KeyRef {
            window_id: &self.window_id,
            network: &self.network,
            station: &self.station,
            location: &self.location,
            band: &self.band,
            start_ns: self.start_ns,
        }
    }
}

/// An owned window key, carried by score rows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WindowKey {
    pub window_id: String,
    pub network: String,
    pub station: String,
    pub location: String,
    pub band: String,
    pub start_ns: i64,
}

impl WindowKey {
    pub fn of(r: &impl Keyed) -> Self {
        let k = r.key();
        Self {
            window_id: k.window_id.into(),
            network: k.network.into(),
            station: k.station.into(),
            location: k.location.into(),
            band: k.band.into(),
            start_ns: k.start_ns,
        }
    }
}

impl Keyed for WindowKey {
    fn key(&self) -> KeyRef<'_> {
        KeyRef {
            window_id: &self.window_id,
            network: &self.network,
            station: &self.station,
            location: &self.location,
            band: &self.band,
            start_ns: self.start_ns,
        }
    }
}
