//! One Arrow schema per table, in the types Delta stores (timestamps in µs UTC, lists, maps),
//! with the partition columns `day` and `stream` last. What a lake's windows are (spectrogram
//! shape and input, feature set) is a property of its tables, checked by every writer.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

use quakelens_signal::features::FeatureSet;
use quakelens_signal::spectrogram::SpectrogramInput;

use crate::record::SourceAttributes;

/// Bumped whenever a table's columns change; stored in every table's properties.
pub const SCHEMA_VERSION: u32 = 3;

/// Table property keys (Delta `configuration`).
pub mod property {
    pub const SCHEMA_VERSION: &str = "quakelens.schema_version";
    pub const SPECTROGRAM_SHAPE: &str = "quakelens.spectrogram_shape";
    pub const SPECTROGRAM: &str = "quakelens.spectrogram";
    pub const FEATURE_SET: &str = "quakelens.feature_set";
    /// `C,N`: the windows table stores each window's raw samples (for waveform models).
    pub const WAVEFORM_SHAPE: &str = "quakelens.waveform_shape";
}

/// Partition columns of every table: UTC day of the window start and `NET.STA.LOC.BAND`.
pub const PARTITIONS: [&str; 2] = ["day", "stream"];

/// The tables of a lake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Windows,
    Features,
    Scores,
    Magnitudes,
    ForestShap,
    CnnShap,
    WaveformShap,
}

impl Table {
    pub const ALL: [Table; 7] = [
        Table::Windows,
        Table::Features,
        Table::Scores,
        Table::Magnitudes,
        Table::ForestShap,
        Table::CnnShap,
        Table::WaveformShap,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Table::Windows => "windows",
            Table::Features => "features",
            Table::Scores => "scores",
            Table::Magnitudes => "magnitudes",
            Table::ForestShap => "forest_shap",
            Table::CnnShap => "cnn_shap",
            Table::WaveformShap => "waveform_shap",
        }
    }

    pub fn from_name(name: &str) -> Option<Table> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Whether rows are per model (their key is window and model).
    pub fn schema_has_model(self) -> bool {
        !matches!(self, Table::Windows | Table::Features)
    }

    /// The table's Arrow schema for windows of `format`.
    pub fn schema(self, format: &LakeFormat) -> SchemaRef {
        match self {
            Table::Windows => windows_schema(format.waveform.is_some()),
            Table::Features => features_schema(format.features),
            Table::Scores => scores_schema(),
            Table::Magnitudes => magnitudes_schema(),
            Table::ForestShap => forest_shap_schema(),
            Table::CnnShap => cnn_shap_schema(),
            Table::WaveformShap => waveform_shap_schema(),
        }
    }

    /// The properties a new table gets (and an existing one must have).
    pub fn properties(self, format: &LakeFormat) -> HashMap<String, String> {
        let mut p = HashMap::from([(
            property::SCHEMA_VERSION.to_string(),
            SCHEMA_VERSION.to_string(),
        )]);
        match self {
            Table::Windows => {
                let [c, h, w] = format.shape;
                p.insert(property::SPECTROGRAM_SHAPE.into(), format!("{c},{h},{w}"));
                p.insert(property::SPECTROGRAM.into(), format.input.to_string());
                if let Some([c, n]) = format.waveform {
                    p.insert(property::WAVEFORM_SHAPE.into(), format!("{c},{n}"));
                }
            }
            Table::Features => {
                p.insert(property::FEATURE_SET.into(), format.features.to_string());
            }
            _ => {}
        }
        p
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a lake's windows are: every window of a lake shares them, and models check them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LakeFormat {
    /// `[channels, freqs, frames]` of the stored spectrograms.
    pub shape: [usize; 3],
    pub input: SpectrogramInput,
    pub features: FeatureSet,
    /// `[channels, samples]` of the raw 100 Hz samples stored with every window, for models
    /// that read waveforms (the paper's 1-D CNN); `None`: the lake stores spectrograms only.
    /// Chosen when the lake is created: a column of the windows table rather than a table of
    /// its own, so a window and its samples land in one commit and one set of positions.
    pub waveform: Option<[usize; 2]>,
}

impl LakeFormat {
    pub fn spectrogram_len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Samples per stored waveform (0 when the lake stores none).
    pub fn waveform_len(&self) -> usize {
        self.waveform.map_or(0, |[c, n]| c * n)
    }

    /// Reads a format back from the windows and features tables' properties.
    pub fn from_properties(
        windows: &HashMap<String, String>,
        features: Option<&HashMap<String, String>>,
    ) -> Result<LakeFormat, String> {
        let get = |key: &str| {
            windows
                .get(key)
                .ok_or_else(|| format!("windows has no {key} property"))
        };
        let shape = parse_shape(get(property::SPECTROGRAM_SHAPE)?)
            .ok_or_else(|| format!("bad {}", property::SPECTROGRAM_SHAPE))?;
        let input = get(property::SPECTROGRAM)?.parse()?;
        let features = match features.and_then(|f| f.get(property::FEATURE_SET)) {
            Some(set) => set.parse()?,
            None => FeatureSet::default(),
        };
        let waveform = match windows.get(property::WAVEFORM_SHAPE) {
            Some(text) => Some(
                parse_waveform_shape(text)
                    .ok_or_else(|| format!("bad {} {text:?}", property::WAVEFORM_SHAPE))?,
            ),
            None => None,
        };
        Ok(LakeFormat {
            shape,
            input,
            features,
            waveform,
        })
    }
}

/// `C,H,W` → `[C, H, W]` (all positive).
pub fn parse_shape(text: &str) -> Option<[usize; 3]> {
    let dims: Vec<usize> = text
        .split(',')
        .map(|d| d.trim().parse().ok())
        .collect::<Option<_>>()?;
    let dims: [usize; 3] = dims.try_into().ok()?;
    dims.iter().all(|&d| d > 0).then_some(dims)
}

/// `C,N` → `[C, N]` (both positive).
pub fn parse_waveform_shape(text: &str) -> Option<[usize; 2]> {
    let (c, n) = text.split_once(',')?;
    let dims = [c.trim().parse().ok()?, n.trim().parse().ok()?];
    dims.iter().all(|&d| d > 0).then_some(dims)
}

pub(crate) fn ts(name: &str, nullable: bool) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        nullable,
    )
}

pub(crate) fn list_of(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("element", item, true)))
}

/// The catalogue row: every column of the source's row, as text (`key` → `value`).
pub(crate) fn catalog_type() -> DataType {
    DataType::Map(
        Arc::new(Field::new(
            "key_value",
            DataType::Struct(Fields::from(vec![
                Field::new("key", DataType::Utf8, false),
                Field::new("value", DataType::Utf8, true),
            ])),
            false,
        )),
        false,
    )
}

pub(crate) fn id_fields() -> Vec<Field> {
    vec![
        Field::new("window_id", DataType::Utf8, false),
        Field::new("network", DataType::Utf8, false),
        Field::new("station", DataType::Utf8, false),
        Field::new("location", DataType::Utf8, false),
        Field::new("band", DataType::Utf8, false),
        ts("start_time", false),
    ]
}

fn with_partitions(mut fields: Vec<Field>) -> SchemaRef {
    fields.extend(PARTITIONS.map(|p| Field::new(p, DataType::Utf8, false)));
    Arc::new(Schema::new(fields))
}

/// `windows`: identity, timing, trigger and gap facts, labels, catalogue, the spectrogram
/// (`[channel][freq][frame]` flattened; the shape is the table's `quakelens.spectrogram_shape`)
/// and, in lakes made for waveform models, the raw samples (`waveform`, `[channel][sample]`,
/// shape `quakelens.waveform_shape`).
pub fn windows_schema(waveforms: bool) -> SchemaRef {
    let mut fields = id_fields();
    fields.extend([
        ts("end_time", false),
        ts("onset_time", true),
        Field::new("mode", DataType::Utf8, false),
        Field::new("trigger_ratio", DataType::Float64, true),
        Field::new("sample_rate", DataType::Float64, false),
        Field::new("source_rate", DataType::Float64, false),
        Field::new("resampled", DataType::Boolean, false),
        Field::new("gap_runs", DataType::Int32, false),
        Field::new("filled_samples", DataType::Int32, false),
        Field::new("flat_channels", DataType::Int32, false),
        Field::new("channel_order", DataType::Utf8, false),
        Field::new("event_id", DataType::Utf8, true),
        Field::new("label", DataType::Int32, true),
        Field::new("magnitude", DataType::Float64, true),
        Field::new("ttf_s", DataType::Float64, true),
    ]);
    fields.extend(
        SourceAttributes::COLUMNS
            .iter()
            .map(|c| Field::new(*c, DataType::Float64, true)),
    );
    fields.extend([
        Field::new("catalog", catalog_type(), true),
        Field::new("spectrogram", list_of(DataType::Float32), false),
    ]);
    if waveforms {
        fields.push(Field::new("waveform", list_of(DataType::Float32), false));
    }
    with_partitions(fields)
}

/// `features`: identity plus the 69 waveform features of the lake's feature set.
pub fn features_schema(set: FeatureSet) -> SchemaRef {
    let mut fields = id_fields();
    fields.extend(
        set.column_names()
            .into_iter()
            .map(|name| Field::new(name, DataType::Float64, true)),
    );
    with_partitions(fields)
}

/// `scores`: identity, model, the two-class logits and P(aftershock) (null for models of more
/// classes), every class's logit and probability, and the predicted class.
pub fn scores_schema() -> SchemaRef {
    let mut fields = id_fields();
    fields.extend([
        Field::new("model_kind", DataType::Utf8, false),
        Field::new("model_hash", DataType::Utf8, false),
        Field::new("logit_foreshock", DataType::Float32, true),
        Field::new("logit_aftershock", DataType::Float32, true),
        Field::new("p_aftershock", DataType::Float32, true),
        Field::new("logits", list_of(DataType::Float32), false),
        Field::new("probabilities", list_of(DataType::Float32), false),
        Field::new("predicted_index", DataType::Int32, false),
        Field::new("predicted_class", DataType::Utf8, false),
        ts("scored_at", false),
    ]);
    with_partitions(fields)
}

/// `magnitudes`: identity, model and the predicted magnitude.
pub fn magnitudes_schema() -> SchemaRef {
    let mut fields = id_fields();
    fields.extend([
        Field::new("model_hash", DataType::Utf8, false),
        Field::new("magnitude_pred", DataType::Float64, false),
        ts("scored_at", false),
    ]);
    with_partitions(fields)
}

/// `forest_shap`: identity, model, feature, value, base value.
pub fn forest_shap_schema() -> SchemaRef {
    let mut fields = id_fields();
    fields.extend([
        Field::new("model_hash", DataType::Utf8, false),
        Field::new("feature", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
        Field::new("base_value", DataType::Float64, false),
    ]);
    with_partitions(fields)
}

/// `cnn_shap`: one row per window, method and spectrogram cell.
pub fn cnn_shap_schema() -> SchemaRef {
    let mut fields = id_fields();
    fields.extend([
        Field::new("model_hash", DataType::Utf8, false),
        Field::new("method", DataType::Utf8, false),
        Field::new("target", DataType::Utf8, false),
        Field::new("budget", DataType::Int32, false),
        Field::new("seed", DataType::Int64, false),
        Field::new("channel", DataType::Int32, false),
        Field::new("freq_hz", DataType::Float32, false),
        Field::new("time_s", DataType::Float32, false),
        Field::new("value", DataType::Float32, false),
        Field::new("output", DataType::Float64, false),
        Field::new("base_value", DataType::Float64, false),
        // The windows explained together whose 8-bit range the study's masker shared (null
        // for maskers that see one window at a time).
        Field::new("batch", DataType::Utf8, true),
    ]);
    with_partitions(fields)
}

/// `waveform_shap`: explanations of waveform models, one row per window and cell. A cell is a
/// box of the window: a channel (null: all channels at once) × `start_s..end_s` × `low_hz..
/// high_hz`. Time explanations (`partition`) have a cell per channel and segment spanning every
/// frequency; band explanations (`bandstop`) a cell per band spanning every channel and the
/// whole window.
pub fn waveform_shap_schema() -> SchemaRef {
    let mut fields = id_fields();
    fields.extend([
        Field::new("model_hash", DataType::Utf8, false),
        Field::new("method", DataType::Utf8, false),
        Field::new("target", DataType::Utf8, false),
        Field::new("budget", DataType::Int32, false),
        Field::new("channel", DataType::Int32, true),
        Field::new("start_s", DataType::Float32, false),
        Field::new("end_s", DataType::Float32, false),
        Field::new("low_hz", DataType::Float32, false),
        Field::new("high_hz", DataType::Float32, false),
        Field::new("value", DataType::Float32, false),
        Field::new("output", DataType::Float64, false),
        Field::new("base_value", DataType::Float64, false),
    ]);
    with_partitions(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_ends_with_its_partitions() {
        let format = LakeFormat {
            shape: [3, 33, 153],
            input: SpectrogramInput::default(),
            features: FeatureSet::Study,
            waveform: Some([3, 2500]),
        };
        for t in Table::ALL {
            let s = t.schema(&format);
            let n = s.fields().len();
            assert_eq!(s.field(n - 2).name(), "day", "{t}");
            assert_eq!(s.field(n - 1).name(), "stream", "{t}");
            assert_eq!(s.field(0).name(), "window_id", "{t}");
            assert_eq!(Table::from_name(t.name()), Some(t));
        }
        assert_eq!(
            features_schema(FeatureSet::Study).fields().len(),
            6 + 69 + 2
        );
    }

    #[test]
    fn the_format_is_read_back_from_the_properties() {
        let format = LakeFormat {
            shape: [3, 33, 153],
            input: SpectrogramInput::study_image(quakelens_signal::spectrogram::Power::Linear),
            features: FeatureSet::Physical,
            waveform: None,
        };
        for format in [
            format,
            LakeFormat {
                waveform: Some([3, 2500]),
                ..format
            },
        ] {
            let back = LakeFormat::from_properties(
                &Table::Windows.properties(&format),
                Some(&Table::Features.properties(&format)),
            );
            assert_eq!(back, Ok(format));
        }
        let mut bad = Table::Windows.properties(&format);
        bad.insert(property::WAVEFORM_SHAPE.into(), "3".into());
        assert!(LakeFormat::from_properties(&bad, None)
            .unwrap_err()
            .contains(property::WAVEFORM_SHAPE));
        assert!(LakeFormat::from_properties(&HashMap::new(), None).is_err());
        assert_eq!(parse_shape("3, 33,153"), Some([3, 33, 153]));
        assert_eq!(parse_shape("3,0,1"), None);
        assert_eq!(parse_waveform_shape("3, 2500"), Some([3, 2500]));
        assert_eq!(parse_waveform_shape("0,2500"), None);
    }

    #[test]
    fn only_lakes_for_waveform_models_have_a_waveform_column() {
        let has = |w: bool| windows_schema(w).field_with_name("waveform").is_ok();
        assert!(has(true) && !has(false));
    }
}
