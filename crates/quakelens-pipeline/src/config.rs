//! Settings shared by every stage.

use std::path::PathBuf;

use quakelens_signal::spectrogram::{ImageScaling, SpectrogramParams};
use quakelens_signal::stream::ChannelOrder;
use quakelens_signal::window::{GapPolicy, WindowMode};

use crate::score::ModelPaths;

/// Everything the embedded pipeline needs besides its input.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    pub mode: WindowMode,
    pub gaps: GapPolicy,
    pub order: ChannelOrder,
    pub spectrogram: SpectrogramParams,
    pub scaling: ImageScaling,
    pub lake: PathBuf,
    /// Catalogue CSV that labels windows (`event_id,station,p_time,magnitude,class`).
    pub catalog: Option<PathBuf>,
    /// Largest |onset − catalogued P| that still matches an event (s).
    pub label_tolerance_s: f64,
    /// Windowing chunk (s): windows are cut at most this long after their data is complete.
    /// Part of the result's definition (see `windowing`): compare runs with the same value.
    pub chunk_s: f64,
    /// Windows transformed and written per lake write (bounds memory).
    pub batch_windows: usize,
    /// Models that score each batch (none: windows only).
    pub models: ModelPaths,
    /// Windows per CNN forward pass.
    pub score_batch: usize,
    /// Image SHAP budget (model evaluations) per window for the CNN; 0: no CNN explanations.
    /// The forest's are always written (TreeSHAP is exact and cheap).
    pub explain_evals: usize,
    /// Draw progress bars on stderr.
    pub progress: bool,
}

impl PipelineConfig {
    pub fn new(lake: PathBuf) -> Self {
        Self {
            mode: WindowMode::default(),
            gaps: GapPolicy::default(),
            order: ChannelOrder::default(),
            spectrogram: SpectrogramParams::default(),
            scaling: ImageScaling::default(),
            lake,
            catalog: None,
            label_tolerance_s: 1.0,
            chunk_s: 1.0,
            batch_windows: 256,
            models: ModelPaths::default(),
            score_batch: 64,
            explain_evals: 0,
            progress: false,
        }
    }

    /// Shape `[channels, freqs, frames]` of the stored spectrograms.
    pub fn spectrogram_shape(&self) -> [usize; 3] {
        let n = self.mode.window_samples();
        [3, self.spectrogram.n_freqs(), self.spectrogram.n_frames(n)]
    }
}
