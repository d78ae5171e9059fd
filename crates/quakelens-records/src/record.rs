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
    /// Channels that were constant (a dead channel: no range for the image pipeline).
    pub flat_channels: i32,
    /// Component of each spectrogram channel and feature channel, e.g. `NEZ`.
    pub channel_order: String,
    pub event_id: Option<String>,
    /// 0 = foreshock, 1 = aftershock.
    pub label: Option<i32>,
    pub magnitude: Option<f64>,
    /// Time to failure: the event's origin time minus the mainshock's (s), when known.
    pub ttf_s: Option<f64>,
    /// Catalogue geometry when the source knows it (the study's datasets do; live streams don't).
    pub source: SourceAttributes,
    /// The source's whole catalogue row (e.g. a D-set attributes row), sorted by column name.
    pub catalog: CatalogRow,
    /// `[channel][freq][frame]`, flattened.
    pub spectrogram: Vec<f32>,
    /// The 69 waveform features of the lake's feature set, in its column order.
    pub features: Vec<f64>,
    /// The window's 100 Hz samples, `[channel][sample]` flattened (channels as
    /// `channel_order`); empty unless the lake stores waveforms.
    pub waveform: Vec<f32>,
}

/// A catalogue row as `(column, value)` text pairs, sorted by column.
pub type CatalogRow = Vec<(String, String)>;

/// The catalogue value of `column` as a number, read as pandas reads a CSV cell: empty and the
/// usual missing-value markers are missing (`None`); anything else must parse as a float.
pub fn catalog_number(row: &CatalogRow, column: &str) -> Result<Option<f64>, String> {
    let Some(text) = catalog_value(row, column) else {
        return Ok(None);
    };
    text.parse::<f64>()
        .map(Some)
        .map_err(|_| format!("catalogue column {column} holds {text:?}, not a number"))
}

/// The catalogue text of `column`, trimmed; `None` when the row lacks it or holds a missing-value
/// marker ([`is_missing`]).
pub fn catalog_value<'a>(row: &'a CatalogRow, column: &str) -> Option<&'a str> {
    let i = row.binary_search_by(|(k, _)| k.as_str().cmp(column)).ok()?;
    let text = row[i].1.trim();
    (!is_missing(text)).then_some(text)
}

/// pandas' default NA markers (`read_csv` `na_values`).
pub fn is_missing(text: &str) -> bool {
    matches!(
        text,
        "" | "#N/A"
            | "#N/A N/A"
            | "#NA"
            | "-1.#IND"
            | "-1.#QNAN"
            | "-NaN"
            | "-nan"
            | "1.#IND"
            | "1.#QNAN"
            | "<NA>"
            | "N/A"
            | "NA"
            | "NULL"
            | "NaN"
            | "None"
            | "n/a"
            | "nan"
            | "null"
    )
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

    /// The attributes from values in [`SourceAttributes::COLUMNS`] order.
    pub fn from_values(v: [Option<f64>; 7]) -> Self {
        Self {
            p_travel_sec: v[0],
            s_travel_sec: v[1],
            source_depth_km: v[2],
            source_latitude: v[3],
            source_longitude: v[4],
            receiver_latitude: v[5],
            receiver_longitude: v[6],
        }
    }

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

/// One CNN score: every class's logit and probability, and the predicted class.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoreRecord {
    pub key: WindowKey,
    pub model_kind: String,
    pub model_hash: String,
    /// Logits in the model's class order.
    pub logits: Vec<f32>,
    /// softmax(logits).
    pub probabilities: Vec<f32>,
    /// The model's class names, in logit order.
    pub classes: Vec<String>,
    pub scored_ns: i64,
}

impl ScoreRecord {
    /// The predicted class: the largest logit, the first on a tie (one rule everywhere).
    pub fn predicted_index(&self) -> usize {
        predicted_index(&self.logits)
    }

    pub fn predicted_class(&self) -> &str {
        self.classes
            .get(self.predicted_index())
            .map(String::as_str)
            .unwrap_or("")
    }

    /// P(aftershock) of a two-class (foreshock, aftershock) model.
    pub fn p_aftershock(&self) -> Option<f32> {
        (self.probabilities.len() == 2).then(|| self.probabilities[1])
    }
}

/// Index of the largest value, the first on a tie.
pub fn predicted_index(logits: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best
}

/// Numerically stable softmax.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|&v| (v - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.iter().map(|e| e / sum).collect()
}

/// One forest magnitude estimate.
#[derive(Clone, Debug, PartialEq)]
pub struct MagnitudeRecord {
    pub key: WindowKey,
    pub model_hash: String,
    pub magnitude: f64,
    pub scored_ns: i64,
}

/// TreeSHAP values of one window's forest inputs.
#[derive(Clone, Debug, PartialEq)]
pub struct ForestShapRecord {
    pub key: WindowKey,
    pub model_hash: String,
    /// The forest's expected value; `base_value + Σ values` is the predicted magnitude.
    pub base_value: f64,
    /// One value per forest input, in the forest's feature order.
    pub values: Vec<f64>,
}

/// SHAP values of one window's waveform for one output of a waveform model.
#[derive(Clone, Debug, PartialEq)]
pub struct WaveformShapRecord {
    pub key: WindowKey,
    pub model_hash: String,
    /// `partition` (Owen values of channel × time segments) or `bandstop` (exact Shapley values
    /// of frequency bands).
    pub method: String,
    /// The output explained: `margin` or `logit:<class>`.
    pub target: String,
    /// Model evaluations spent.
    pub budget: i32,
    /// The output at the window and with every cell removed: Σ values = output − base_value.
    pub output: f64,
    pub base_value: f64,
    pub cells: Vec<WaveformCell>,
}

/// One attributed box of a window (see `waveform_shap` in the schema).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WaveformCell {
    /// `None`: all channels together.
    pub channel: Option<i32>,
    pub start_s: f32,
    pub end_s: f32,
    pub low_hz: f32,
    pub high_hz: f32,
    pub value: f32,
}

impl Keyed for WaveformShapRecord {
    fn key(&self) -> KeyRef<'_> {
        self.key.key()
    }
}

/// Image SHAP values of one window's spectrogram for one CNN output.
#[derive(Clone, Debug, PartialEq)]
pub struct CnnShapRecord {
    pub key: WindowKey,
    pub model_hash: String,
    /// `partition`, `gradient` or `exact16`.
    pub method: String,
    /// The output explained: `margin` (aftershock − foreshock logit) or a class's logit.
    pub target: String,
    /// Model evaluations (partition) or samples (gradient).
    pub budget: i32,
    pub seed: i64,
    /// The explained output at the window and at the fully masked window:
    /// Σ values = output − base_value for the partition method.
    pub output: f64,
    pub base_value: f64,
    /// `[channel][freq][frame]`, like the spectrogram.
    pub values: Vec<f32>,
    /// The batch explained together when the masker's 8-bit range spanned several windows
    /// (`--masker inpaint`); the study's class maps scale values by their batch's maximum.
    pub batch: Option<String>,
}

impl Keyed for ScoreRecord {
    fn key(&self) -> KeyRef<'_> {
        self.key.key()
    }
}

impl Keyed for MagnitudeRecord {
    fn key(&self) -> KeyRef<'_> {
        self.key.key()
    }
}

impl Keyed for ForestShapRecord {
    fn key(&self) -> KeyRef<'_> {
        self.key.key()
    }
}

impl Keyed for CnnShapRecord {
    fn key(&self) -> KeyRef<'_> {
        self.key.key()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_largest_logit_wins() {
        assert_eq!(predicted_index(&[0.0, 0.0]), 0);
        assert_eq!(predicted_index(&[0.0, 1e-6]), 1);
        assert_eq!(predicted_index(&[2.0, 3.0, 3.0]), 1);
        let p = softmax(&[1000.0, -1000.0]);
        assert_eq!(p, vec![1.0, 0.0]);
        let p = softmax(&[0.0, 0.0]);
        assert_eq!(p, vec![0.5, 0.5]);
    }

    #[test]
    fn catalogue_numbers_are_read_like_pandas() {
        let row: CatalogRow = vec![
            ("a".into(), " 1.5 ".into()),
            ("b".into(), "NaN".into()),
            ("c".into(), "".into()),
            ("d".into(), "HHZ".into()),
        ];
        assert_eq!(catalog_number(&row, "a"), Ok(Some(1.5)));
        assert_eq!(catalog_number(&row, "b"), Ok(None));
        assert_eq!(catalog_number(&row, "c"), Ok(None));
        assert_eq!(catalog_number(&row, "zz"), Ok(None));
        assert!(catalog_number(&row, "d").unwrap_err().contains("HHZ"));
    }
}
