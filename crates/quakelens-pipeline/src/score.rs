//! Scoring stage: window batches → CNN scores (P(aftershock), logits, model hash) and forest
//! magnitudes. Transport-agnostic: the embedded runner and the `score` command call it; the
//! Kafka `scorer`/`forest` services wrap the same functions.

use std::path::{Path, PathBuf};

use quakelens_explain::ForestShap;
use quakelens_lake::{
    ForestShapRecord, MagnitudeRecord, ScoreRecord, SourceAttributes, WindowKey, WindowRecord,
};
use quakelens_models::cnn::{CnnError, CnnModel};
use quakelens_models::forest::{Forest, ForestFileError};

#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    #[error("CNN: {0}")]
    Cnn(#[from] CnnError),
    #[error("forest: {0}")]
    Forest(#[from] ForestFileError),
    #[error(
        "forest {path}: input {name:?} is neither a waveform feature nor a catalogue attribute"
    )]
    UnknownInput { path: String, name: String },
    #[error("explaining the forest: {0}")]
    Explain(String),
}

/// Model files to score with.
#[derive(Clone, Debug, Default)]
pub struct ModelPaths {
    pub cnn: Option<PathBuf>,
    pub forest: Option<PathBuf>,
}

/// Where a forest input comes from in a [`WindowRecord`].
#[derive(Clone, Copy, Debug)]
pub enum InputSource {
    /// Index into the 69 waveform features.
    Feature(usize),
    /// Index into [`SourceAttributes::COLUMNS`].
    Attribute(usize),
}

/// The loaded models plus how to feed them.
pub struct Scorer {
    pub cnn: Option<CnnModel>,
    pub forest: Option<(Forest, Vec<InputSource>)>,
    pub batch: usize,
    /// Also explain the forest's magnitudes (exact TreeSHAP).
    pub explain: bool,
}

/// What one scoring pass produced.
#[derive(Debug, Default)]
pub struct Scored {
    pub scores: Vec<ScoreRecord>,
    pub magnitudes: Vec<MagnitudeRecord>,
    /// Windows the forest could not score, with the reason (e.g. a missing catalogue column).
    pub unscored: Vec<String>,
    /// TreeSHAP values of the magnitudes (when [`Scorer::explain`] is set).
    pub forest_shap: Vec<ForestShapRecord>,
}

fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
}

impl Scorer {
    pub fn load(paths: &ModelPaths, batch: usize) -> Result<Self, ScoreError> {
        let device = quakelens_models::cnn::default_device()?;
        let cnn = match &paths.cnn {
            Some(p) => Some(CnnModel::load(p, device)?),
            None => None,
        };
        let forest = match &paths.forest {
            Some(p) => {
                let f = Forest::load(p)?;
                let map = input_map(&f, p)?;
                Some((f, map))
            }
            None => None,
        };
        Ok(Self {
            cnn,
            forest,
            batch: batch.max(1),
            explain: false,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.cnn.is_none() && self.forest.is_none()
    }

    /// Scores `records` with whichever models are loaded.
    pub fn score(&self, records: &[WindowRecord]) -> Result<Scored, ScoreError> {
        let keys: Vec<WindowKey> = records.iter().map(WindowKey::of).collect();
        let mut out = Scored::default();
        if let Some(model) = &self.cnn {
            let inputs: Vec<&[f32]> = records.iter().map(|r| r.spectrogram.as_slice()).collect();
            out.scores = cnn_scores(model, &keys, &inputs, self.batch)?;
        }
        if let (Some((forest, _)), Some(rows)) = (&self.forest, self.forest_rows(records)) {
            let (m, unscored) = forest_magnitudes(forest, &keys, &rows);
            out.magnitudes = m;
            out.unscored = unscored;
            if self.explain {
                out.forest_shap = forest_explanations(forest, &keys, &rows)?;
            }
        }
        Ok(out)
    }
}

impl Scorer {
    /// Each record's forest inputs in the forest's order (NaN where missing); `None` without
    /// a forest.
    pub fn forest_rows(&self, records: &[WindowRecord]) -> Option<Vec<Vec<f64>>> {
        let (_, map) = self.forest.as_ref()?;
        Some(
            records
                .iter()
                .map(|r| {
                    map.iter()
                        .map(|s| match *s {
                            InputSource::Feature(i) => {
                                r.features.get(i).copied().unwrap_or(f64::NAN)
                            }
                            InputSource::Attribute(i) => r.source.values()[i].unwrap_or(f64::NAN),
                        })
                        .collect()
                })
                .collect(),
        )
    }
}

fn input_map(forest: &Forest, path: &Path) -> Result<Vec<InputSource>, ScoreError> {
    let features = quakelens_signal::features::column_names();
    forest
        .spec
        .features
        .iter()
        .map(|name| {
            if let Some(i) = features.iter().position(|f| f == name) {
                Ok(InputSource::Feature(i))
            } else if let Some(i) = SourceAttributes::COLUMNS.iter().position(|c| c == name) {
                Ok(InputSource::Attribute(i))
            } else {
                Err(ScoreError::UnknownInput {
                    path: path.display().to_string(),
                    name: name.clone(),
                })
            }
        })
        .collect()
}

/// CNN scores for windows given as keys and spectrograms.
pub fn cnn_scores(
    model: &CnnModel,
    keys: &[WindowKey],
    spectrograms: &[&[f32]],
    batch: usize,
) -> Result<Vec<ScoreRecord>, ScoreError> {
    let scores = model.score(spectrograms, batch)?;
    let at = now_ns();
    Ok(keys
        .iter()
        .zip(scores)
        .map(|(k, s)| ScoreRecord {
            key: k.clone(),
            model_kind: model.kind.name().into(),
            model_hash: model.hash.0.clone(),
            logit_foreshock: s.logits[0],
            logit_aftershock: s.logits[1],
            p_aftershock: s.p_aftershock,
            scored_ns: at,
        })
        .collect())
}

/// Forest magnitudes for rows of inputs in the forest's order; rows with a missing (NaN) input
/// are returned as reasons instead of guessed.
pub fn forest_magnitudes(
    forest: &Forest,
    keys: &[WindowKey],
    rows: &[Vec<f64>],
) -> (Vec<MagnitudeRecord>, Vec<String>) {
    let at = now_ns();
    let hash = forest
        .hash
        .as_ref()
        .map(|h| h.0.clone())
        .unwrap_or_default();
    let mut out = Vec::new();
    let mut unscored = Vec::new();
    let mut x32 = Vec::with_capacity(forest.n_features());
    for (k, row) in keys.iter().zip(rows) {
        if let Some(i) = row.iter().position(|v| !v.is_finite()) {
            unscored.push(format!(
                "{}: forest input {} is missing",
                k.window_id, forest.spec.features[i]
            ));
            continue;
        }
        x32.clear();
        x32.extend(row.iter().map(|&v| v as f32));
        out.push(MagnitudeRecord {
            key: k.clone(),
            model_hash: hash.clone(),
            magnitude: forest.predict_row(&x32),
            scored_ns: at,
        });
    }
    (out, unscored)
}

/// TreeSHAP explanations of the forest's magnitudes for the rows it can score (rows with a
/// missing input are skipped, as [`forest_magnitudes`] skips them); rows in parallel.
pub fn forest_explanations(
    forest: &Forest,
    keys: &[WindowKey],
    rows: &[Vec<f64>],
) -> Result<Vec<ForestShapRecord>, ScoreError> {
    let shap = ForestShap::new(forest).map_err(|e| ScoreError::Explain(e.to_string()))?;
    let hash = forest
        .hash
        .as_ref()
        .map(|h| h.0.clone())
        .unwrap_or_default();
    let complete: Vec<(&WindowKey, Vec<f32>)> = keys
        .iter()
        .zip(rows)
        .filter(|(_, row)| row.iter().all(|v| v.is_finite()))
        .map(|(k, row)| (k, row.iter().map(|&v| v as f32).collect()))
        .collect();
    use rayon::prelude::*;
    complete
        .par_iter()
        .map(|(k, x)| {
            let values = shap
                .explain_row(x)
                .map_err(|e| ScoreError::Explain(format!("{}: {e}", k.window_id)))?;
            Ok(ForestShapRecord {
                key: (*k).clone(),
                model_hash: hash.clone(),
                base_value: shap.base_value(),
                values,
            })
        })
        .collect()
}

/// Image SHAP of one window's spectrogram for `model`'s aftershock-minus-foreshock logit: the
/// partition explainer with `max_evals` model evaluations, 100 masked images per forward pass.
pub fn cnn_explanation(
    model: &CnnModel,
    key: &WindowKey,
    spectrogram: &[f32],
    max_evals: usize,
    masker: quakelens_explain::image::Masker,
) -> Result<quakelens_lake::CnnShapRecord, String> {
    cnn_explanation_part(
        model,
        key,
        spectrogram,
        max_evals,
        masker,
        quakelens_explain::image::Part::WHOLE,
    )
}

/// [`cnn_explanation`] for one part of the window's coalitions (`max_evals` is the window's
/// whole budget); the parts' values add up to the window's.
pub fn cnn_explanation_part(
    model: &CnnModel,
    key: &WindowKey,
    spectrogram: &[f32],
    max_evals: usize,
    masker: quakelens_explain::image::Masker,
    part: quakelens_explain::image::Part,
) -> Result<quakelens_lake::CnnShapRecord, String> {
    let [c, h, w] = model.input_shape();
    let shape = quakelens_explain::image::Shape {
        channels: c as usize,
        height: h as usize,
        width: w as usize,
    };
    if spectrogram.len() != shape.len() {
        return Err(format!(
            "window {}: {} spectrogram values, the CNN takes {}",
            key.window_id,
            spectrogram.len(),
            shape.len()
        ));
    }
    use quakelens_explain::image::{partition_part, with_cnn_game};
    let a = with_cnn_game(model, spectrogram, shape, masker, |game| {
        partition_part(game, shape, max_evals, 100, part)
    })
    .map_err(|e| format!("window {}: {e}", key.window_id))?;
    Ok(quakelens_lake::CnnShapRecord {
        key: key.clone(),
        model_hash: model.hash.0.clone(),
        method: "partition".into(),
        budget: max_evals as i32,
        seed: 0,
        output: a.f_image,
        base_value: a.f_background,
        values: a.values.iter().map(|&v| v as f32).collect(),
    })
}
