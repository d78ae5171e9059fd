//! Scoring stage: window batches → CNN scores (P(aftershock), logits, model hash) and forest
//! magnitudes. Transport-agnostic: the embedded runner and the `score` command call it; the
//! Kafka `scorer`/`forest` services wrap the same functions.

use std::path::PathBuf;

use quakelens_explain::ForestShap;
use quakelens_lake::{
    softmax, ForestShapRecord, LakeFormat, MagnitudeRecord, ScoreRecord, WindowKey, WindowRecord,
};
use quakelens_models::cnn::{CnnError, CnnModel};
use quakelens_models::conv1d::WaveformModel;
use quakelens_models::forest::{Forest, ForestFileError, InputMap};
use quakelens_models::hash::ModelHash;
use quakelens_signal::features::FeatureSet;

#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    #[error("CNN: {0}")]
    Cnn(#[from] CnnError),
    #[error("forest: {0}")]
    Forest(#[from] ForestFileError),
    /// The model was made for other windows than these (another spectrogram input, feature
    /// set or shape): nothing about these windows can be scored with it.
    #[error("{0}")]
    Incompatible(String),
    #[error("explaining the forest: {0}")]
    Explain(String),
}

/// Model files to score with.
#[derive(Clone, Debug, Default)]
pub struct ModelPaths {
    pub cnn: Option<PathBuf>,
    pub forest: Option<PathBuf>,
}

/// A forest with where it was loaded from.
pub struct LoadedForest {
    pub forest: Forest,
    pub path: String,
}

impl LoadedForest {
    pub fn hash(&self) -> String {
        self.forest
            .hash
            .as_ref()
            .map(|h| h.0.clone())
            .unwrap_or_default()
    }

    /// Refuses windows whose features are of another set than the forest was grown on.
    pub fn check(&self, features: FeatureSet) -> Result<(), ScoreError> {
        match self.forest.spec.waveform_set() {
            Some(own) if own != features => Err(ScoreError::Incompatible(format!(
                "forest {} was grown on the {own} feature set, these windows carry {features} features",
                self.path
            ))),
            _ => Ok(()),
        }
    }

    /// Each record's inputs in the forest's order (NaN where missing) with the reason a value
    /// could not be read, if any.
    pub fn rows(
        &self,
        records: &[WindowRecord],
        features: FeatureSet,
    ) -> Vec<(Vec<f64>, Option<String>)> {
        let map = InputMap::new(&self.forest.spec.features, features);
        records.iter().map(|r| map.row(r)).collect()
    }
}

/// The loaded models plus how to feed them.
pub struct Scorer {
    /// The spectrogram classifier (the study's CNN2D, or TorchScript).
    pub cnn: Option<CnnModel>,
    /// The waveform classifier (the paper's CONV1D), loaded instead of `cnn` when the `--cnn`
    /// file is one: a run scores with one classifier.
    pub conv1d: Option<WaveformModel>,
    pub forest: Option<LoadedForest>,
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
        let (mut cnn, mut conv1d) = (None, None);
        if let Some(p) = &paths.cnn {
            if quakelens_models::conv1d::is_conv1d_file(p)? {
                conv1d = Some(WaveformModel::load(p, device)?);
            } else {
                cnn = Some(CnnModel::load(p, device)?);
            }
        }
        let forest = match &paths.forest {
            Some(p) => Some(LoadedForest {
                forest: Forest::load(p)?,
                path: p.display().to_string(),
            }),
            None => None,
        };
        Ok(Self {
            cnn,
            conv1d,
            forest,
            batch: batch.max(1),
            explain: false,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.classifier_hash().is_none() && self.forest.is_none()
    }

    /// The classifier that writes `scores`, whichever kind it is.
    pub fn classifier(&self) -> Option<Classifier<'_>> {
        let cnn = self.cnn.as_ref().map(Classifier::Spectrogram);
        cnn.or(self.conv1d.as_ref().map(Classifier::Waveform))
    }

    /// The hash of that classifier.
    pub fn classifier_hash(&self) -> Option<&str> {
        self.classifier().map(|c| c.hash().0.as_str())
    }

    /// Refuses windows of `format` that the models were not made for.
    pub fn check(&self, format: &LakeFormat) -> Result<(), ScoreError> {
        if let Some(model) = &self.cnn {
            let [c, h, w] = model.input_shape();
            if [c as usize, h as usize, w as usize] != format.shape {
                return Err(ScoreError::Incompatible(format!(
                    "the CNN {} takes spectrograms of {:?}, these windows have {:?}",
                    model.hash,
                    model.input_shape(),
                    format.shape
                )));
            }
            model
                .check_input(&format.input)
                .map_err(|e| ScoreError::Incompatible(e.to_string()))?;
        }
        if let Some(model) = &self.conv1d {
            let wanted = quakelens_models::conv1d::WAVEFORM_SHAPE.map(|d| d as usize);
            if format.waveform != Some(wanted) {
                return Err(ScoreError::Incompatible(format!(
                    "the 1-D CNN {} reads waveforms of {wanted:?}, these windows carry {}: make \
                     the lake (and the windower) with --waveforms",
                    model.hash,
                    format
                        .waveform
                        .map_or("none".to_string(), |s| format!("{s:?}"))
                )));
            }
        }
        if let Some(f) = &self.forest {
            f.check(format.features)?;
        }
        Ok(())
    }

    /// Scores `records` (windows of `format`) with whichever models are loaded.
    pub fn score(
        &self,
        records: &[WindowRecord],
        format: &LakeFormat,
    ) -> Result<Scored, ScoreError> {
        self.check(format)?;
        let keys: Vec<WindowKey> = records.iter().map(WindowKey::of).collect();
        let mut out = Scored::default();
        if let Some(c) = self.classifier() {
            let inputs: Vec<&[f32]> = records
                .iter()
                .map(|r| c.input(&r.spectrogram, &r.waveform))
                .collect();
            out.scores = c.scores(&keys, &inputs, self.batch)?;
        }
        if let Some(f) = &self.forest {
            let rows = f.rows(records, format.features);
            let (m, unscored) = forest_magnitudes(&f.forest, &keys, &rows);
            out.magnitudes = m;
            out.unscored = unscored;
            if self.explain {
                out.forest_shap = forest_explanations(&f.forest, &keys, &rows)?;
            }
        }
        Ok(out)
    }
}

/// The classifier that writes `scores`, whichever kind is loaded.
#[derive(Clone, Copy)]
pub enum Classifier<'a> {
    /// The study's CNN2D (or a TorchScript spectrogram CNN).
    Spectrogram(&'a CnnModel),
    /// The paper's CONV1D.
    Waveform(&'a WaveformModel),
}

impl<'a> Classifier<'a> {
    pub fn hash(self) -> &'a ModelHash {
        match self {
            Classifier::Spectrogram(m) => &m.hash,
            Classifier::Waveform(m) => &m.hash,
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            Classifier::Spectrogram(m) => m.kind.name(),
            Classifier::Waveform(m) => m.kind.name(),
        }
    }

    pub fn classes(self) -> Vec<String> {
        match self {
            Classifier::Spectrogram(m) => m.classes(),
            Classifier::Waveform(m) => m.classes.clone(),
        }
    }

    /// Whether it reads the windows' samples rather than their spectrograms.
    pub fn reads_waveforms(self) -> bool {
        matches!(self, Classifier::Waveform(_))
    }

    /// What it reads of one window.
    pub fn input<'r>(self, spectrogram: &'r [f32], waveform: &'r [f32]) -> &'r [f32] {
        if self.reads_waveforms() {
            waveform
        } else {
            spectrogram
        }
    }

    /// Scores of windows given as keys and their inputs ([`Classifier::input`]), `batch` a
    /// forward pass.
    pub fn scores(
        self,
        keys: &[WindowKey],
        inputs: &[&[f32]],
        batch: usize,
    ) -> Result<Vec<ScoreRecord>, ScoreError> {
        let logits: Vec<f32> = match self {
            Classifier::Spectrogram(m) => m
                .score(inputs, batch)?
                .into_iter()
                .flat_map(|s| s.logits)
                .collect(),
            Classifier::Waveform(m) => m.batched_logits(inputs, batch)?,
        };
        let classes = self.classes();
        let at = now_ns();
        Ok(keys
            .iter()
            .zip(logits.chunks_exact(classes.len().max(1)))
            .map(|(key, l)| ScoreRecord {
                key: key.clone(),
                model_kind: self.kind().into(),
                model_hash: self.hash().0.clone(),
                logits: l.to_vec(),
                probabilities: softmax(l),
                classes: classes.clone(),
                scored_ns: at,
            })
            .collect())
    }
}

/// The forest's input row for scoring: missing values replaced by the forest's fill values
/// when it has them, else the reason the window cannot be scored.
fn complete_row(
    forest: &Forest,
    key: &WindowKey,
    (row, problem): &(Vec<f64>, Option<String>),
) -> Result<Vec<f32>, String> {
    if let Some(p) = problem {
        return Err(format!("{}: {p}", key.window_id));
    }
    forest
        .complete_inputs(row)
        .map_err(|e| format!("{}: {e}", key.window_id))
}

/// Forest magnitudes for rows of inputs in the forest's order; rows with a missing input the
/// forest has no fill value for are returned as reasons instead of guessed.
pub fn forest_magnitudes(
    forest: &Forest,
    keys: &[WindowKey],
    rows: &[(Vec<f64>, Option<String>)],
) -> (Vec<MagnitudeRecord>, Vec<String>) {
    let at = now_ns();
    let hash = forest
        .hash
        .as_ref()
        .map(|h| h.0.clone())
        .unwrap_or_default();
    let mut out = Vec::new();
    let mut unscored = Vec::new();
    for (k, row) in keys.iter().zip(rows) {
        match complete_row(forest, k, row) {
            Ok(x) => out.push(MagnitudeRecord {
                key: k.clone(),
                model_hash: hash.clone(),
                magnitude: forest.predict_row(&x),
                scored_ns: at,
            }),
            Err(reason) => unscored.push(reason),
        }
    }
    (out, unscored)
}

/// TreeSHAP explanations of the forest's magnitudes for the rows it can score (the others are
/// skipped, as [`forest_magnitudes`] skips them); rows in parallel.
pub fn forest_explanations(
    forest: &Forest,
    keys: &[WindowKey],
    rows: &[(Vec<f64>, Option<String>)],
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
        .filter_map(|(k, row)| complete_row(forest, k, row).ok().map(|x| (k, x)))
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

/// The CNN output an explanation explains.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExplainTarget {
    /// The aftershock-minus-foreshock logit (ours).
    #[default]
    Margin,
    /// The predicted class's logit (the study's `outputs = argsort.flip[:1]`).
    TopClass,
}

impl ExplainTarget {
    pub fn name(self) -> &'static str {
        match self {
            ExplainTarget::Margin => "margin",
            ExplainTarget::TopClass => "top-class",
        }
    }

    /// The output coefficients of this target for a model with `classes`, and the name recorded
    /// with the values (`margin`, or `logit:<class>`); `logits` (the model's at the window) is
    /// asked for only by the top-class target. The margin needs two classes.
    pub fn coefficients(
        self,
        classes: &[String],
        logits: impl FnOnce() -> Result<Vec<f32>, String>,
    ) -> Result<(Vec<f64>, String), String> {
        match self {
            ExplainTarget::Margin if classes.len() == 2 => {
                Ok((quakelens_models::cnn::MARGIN.to_vec(), "margin".into()))
            }
            ExplainTarget::Margin => Err(format!(
                "the margin target needs a 2-class model, this one has {} classes: use --target top-class",
                classes.len()
            )),
            ExplainTarget::TopClass => {
                let k = quakelens_lake::predicted_index(&logits()?);
                let mut c = vec![0.0; classes.len()];
                c[k] = 1.0;
                Ok((c, format!("logit:{}", classes[k])))
            }
        }
    }
}

impl std::str::FromStr for ExplainTarget {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "margin" => Ok(ExplainTarget::Margin),
            "top-class" => Ok(ExplainTarget::TopClass),
            other => Err(format!(
                "unknown explanation target {other:?}: use margin or top-class"
            )),
        }
    }
}

/// The output coefficients of `target` for the CNN at window `x` (see
/// [`ExplainTarget::coefficients`]).
pub fn target_output(
    model: &CnnModel,
    x: &[f32],
    target: ExplainTarget,
) -> Result<(Vec<f64>, String), String> {
    target.coefficients(&model.classes(), || {
        model
            .logits(x, 1)
            .map(|l| l[0].to_vec())
            .map_err(|e| e.to_string())
    })
}

/// Image SHAP of one window's spectrogram for `model`'s `target` output: the partition
/// explainer with `max_evals` model evaluations, 100 masked images per forward pass.
pub fn cnn_explanation(
    model: &CnnModel,
    key: &WindowKey,
    spectrogram: &[f32],
    max_evals: usize,
    masker: quakelens_explain::image::Masker,
    target: ExplainTarget,
) -> Result<quakelens_lake::CnnShapRecord, String> {
    cnn_explanation_part(
        model,
        key,
        spectrogram,
        max_evals,
        masker,
        target,
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
    target: ExplainTarget,
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
    let (output, name) = target_output(model, spectrogram, target)
        .map_err(|e| format!("window {}: {e}", key.window_id))?;
    use quakelens_explain::image::{partition_part, with_cnn_game};
    let a = with_cnn_game(model, spectrogram, shape, masker, &output, |game| {
        partition_part(game, shape, max_evals, 100, part)
    })
    .map_err(|e| format!("window {}: {e}", key.window_id))?;
    Ok(quakelens_lake::CnnShapRecord {
        key: key.clone(),
        model_hash: model.hash.0.clone(),
        method: "partition".into(),
        target: name,
        budget: max_evals as i32,
        seed: 0,
        output: a.f_image,
        base_value: a.f_background,
        values: a.values.iter().map(|&v| v as f32).collect(),
        batch: None,
    })
}
