//! Settings shared by every stage.

use std::path::PathBuf;

use quakelens_lake::{LakeFormat, LakeLocation};
use quakelens_signal::features::FeatureSet;
use quakelens_signal::spectrogram::{SpectrogramInput, SpectrogramParams};
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
    /// What the stored spectrograms are (log or linear, the study's image pipeline or not).
    pub input: SpectrogramInput,
    pub features: FeatureSet,
    /// Where the embedded run writes (services that write no lake leave it `None`).
    pub lake: Option<LakeLocation>,
    /// Catalogue CSV that labels windows (`event_id,station,p_time,magnitude,class`).
    pub catalog: Option<PathBuf>,
    /// Largest |onset − catalogued P| that still matches an event (s).
    pub label_tolerance_s: f64,
    /// Windowing chunk (s): windows are cut at most this long after their data is complete.
    /// Part of the result's definition (see `windowing`): compare runs with the same value.
    pub chunk_s: f64,
    /// Windows transformed and written per lake write (bounds memory).
    pub batch_windows: usize,
    /// The embedded run's queues: unread bytes each in-memory topic may hold before the stage
    /// sending to it waits.
    pub queue_bytes: usize,
    /// Models that score each batch (none: windows only).
    pub models: ModelPaths,
    /// Windows per CNN forward pass.
    pub score_batch: usize,
    /// Image SHAP budget (model evaluations) per window for the CNN; 0: no CNN explanations.
    /// The forest's are always written (TreeSHAP is exact and cheap).
    pub explain_evals: usize,
    /// Draw progress bars on stderr.
    pub progress: bool,
    /// Store every window's samples in the lake and the `windows` messages, for waveform
    /// models (the paper's 1-D CNN); fixed when a lake is created.
    pub waveforms: bool,
    /// The mainshock the `ttf_s` of catalogued windows counts from (default Norcia's origin).
    pub mainshock_ns: i64,
}

impl PipelineConfig {
    pub fn new(lake: Option<LakeLocation>) -> Self {
        Self {
            mode: WindowMode::default(),
            gaps: GapPolicy::default(),
            order: ChannelOrder::default(),
            spectrogram: SpectrogramParams::default(),
            input: SpectrogramInput::default(),
            features: FeatureSet::default(),
            lake,
            catalog: None,
            label_tolerance_s: 1.0,
            chunk_s: 1.0,
            batch_windows: 256,
            queue_bytes: 64 << 20,
            models: ModelPaths::default(),
            score_batch: 64,
            explain_evals: 0,
            progress: false,
            waveforms: false,
            mainshock_ns: quakelens_signal::time::parse_ns(quakelens_models::ttf::NORCIA_MAINSHOCK)
                .unwrap_or_default(),
        }
    }

    /// Shape `[channels, freqs, frames]` of the stored spectrograms.
    pub fn spectrogram_shape(&self) -> [usize; 3] {
        let n = self.mode.window_samples();
        [3, self.spectrogram.n_freqs(), self.spectrogram.n_frames(n)]
    }

    /// What these settings' windows are, as the lake records it.
    pub fn format(&self) -> LakeFormat {
        LakeFormat {
            shape: self.spectrogram_shape(),
            input: self.input,
            features: self.features,
            waveform: self.waveforms.then(|| [3, self.mode.window_samples()]),
        }
    }
}
