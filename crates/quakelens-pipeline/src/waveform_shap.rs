//! Explanations of a waveform model (the paper's 1-D CNN) for one window, as `waveform_shap`
//! records: Owen values of channel × time segments and exact Shapley values of frequency bands.

use quakelens_explain::image::Masker;
use quakelens_explain::waveform::{explain_bands, explain_segments, Segments};
use quakelens_lake::{WaveformCell, WaveformShapRecord, WindowKey};
use quakelens_models::conv1d::WaveformModel;
use quakelens_signal::bands::Bands;

use crate::score::ExplainTarget;

/// How windows are explained.
#[derive(Clone, Debug)]
pub struct WaveformExplainConfig {
    /// Time segment length in seconds (the players per channel).
    pub segment_s: f64,
    /// Model evaluations for the time explanation.
    pub max_evals: usize,
    /// What a removed segment becomes.
    pub masker: Masker,
    /// The bands of the frequency explanation (`None`: no frequency explanation).
    pub bands: Option<Bands>,
    pub target: ExplainTarget,
    /// Masked windows per forward pass.
    pub batch: usize,
}

/// The time explanation and (with bands) the frequency explanation of window `x`, sampled at
/// `rate_hz`, `[channel][sample]`.
pub fn waveform_explanations(
    model: &WaveformModel,
    key: &WindowKey,
    x: &[f32],
    rate_hz: f64,
    cfg: &WaveformExplainConfig,
) -> Result<Vec<WaveformShapRecord>, String> {
    let at = |e: String| format!("window {}: {e}", key.window_id);
    let [channels, samples] = quakelens_models::conv1d::WAVEFORM_SHAPE.map(|v| v as usize);
    if x.len() != channels * samples {
        return Err(at(format!(
            "{} waveform values, the model takes {channels} × {samples}",
            x.len()
        )));
    }
    let length = (cfg.segment_s * rate_hz).round() as usize;
    let segments = Segments::new(channels, samples, length).map_err(at)?;
    let (output, target) = cfg
        .target
        .coefficients(&model.classes, || {
            model.logits(x, 1).map_err(|e| e.to_string())
        })
        .map_err(at)?;
    let classes = model.classes.len();
    let mut f = |xs: &[f32], n: usize| -> Result<Vec<f64>, String> {
        let logits = model.logits(xs, n).map_err(|e| e.to_string())?;
        Ok(logits
            .chunks_exact(classes)
            .map(|l| l.iter().zip(&output).map(|(&v, w)| v as f64 * w).sum())
            .collect())
    };
    let duration = samples as f64 / rate_hz;
    let nyquist = (rate_hz / 2.0) as f32;
    let time =
        explain_segments(&mut f, x, segments, cfg.masker, cfg.max_evals, cfg.batch).map_err(at)?;
    let count = segments.count();
    let mut out = vec![WaveformShapRecord {
        key: key.clone(),
        model_hash: model.hash.0.clone(),
        method: "partition".into(),
        target: target.clone(),
        budget: time.evaluations as i32,
        output: time.f_image,
        base_value: time.f_background,
        cells: time
            .values
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let (a, b) = segments.bounds(i % count);
                WaveformCell {
                    channel: Some((i / count) as i32),
                    start_s: (a as f64 / rate_hz) as f32,
                    end_s: (b as f64 / rate_hz) as f32,
                    low_hz: 0.0,
                    high_hz: nyquist,
                    value: v as f32,
                }
            })
            .collect(),
    }];
    if let Some(bands) = &cfg.bands {
        let b = explain_bands(&mut f, x, channels, rate_hz, bands, cfg.batch).map_err(at)?;
        out.push(WaveformShapRecord {
            key: key.clone(),
            model_hash: model.hash.0.clone(),
            method: "bandstop".into(),
            target,
            budget: b.evaluations as i32,
            output: b.f_image,
            base_value: b.f_background,
            cells: b
                .values
                .iter()
                .enumerate()
                .map(|(k, &v)| {
                    let (low, high) = bands.edges(k, rate_hz);
                    WaveformCell {
                        channel: None,
                        start_s: 0.0,
                        end_s: duration as f32,
                        low_hz: low as f32,
                        high_hz: high as f32,
                        value: v as f32,
                    }
                })
                .collect(),
        });
    }
    Ok(out)
}
