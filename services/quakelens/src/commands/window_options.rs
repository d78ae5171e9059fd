//! Window, trigger and image options shared by `run` and the `windower` service.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};

use quakelens_lake::LakeLocation;
use quakelens_pipeline::PipelineConfig;
use quakelens_signal::features::FeatureSet;
use quakelens_signal::filter::TriggerFilter;
use quakelens_signal::spectrogram::{ChannelStats, ImageScaling, Power, SpectrogramInput};
use quakelens_signal::stream::ChannelOrder;
use quakelens_signal::trigger::TriggerConfig;
use quakelens_signal::window::{GapPolicy, WindowMode};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Mode {
    /// One P-aligned window per STA/LTA trigger (5 s before to 20 s after the onset).
    Event,
    /// Fixed-length windows on a fixed time grid.
    Sliding,
}

/// How windows are cut and stored.
#[derive(Args, Clone, Debug)]
pub struct WindowOptions {
    /// Catalogue CSV that labels windows (event_id,station,p_time,magnitude,class).
    #[arg(long)]
    catalog: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Mode::Event)]
    mode: Mode,
    /// Sliding mode: window length (s).
    #[arg(long, default_value_t = 25.0)]
    length: f64,
    /// Sliding mode: step between window starts (s).
    #[arg(long, default_value_t = 10.0)]
    step: f64,
    /// Event mode: STA length (s).
    #[arg(long, default_value_t = 0.5)]
    sta: f64,
    /// Event mode: LTA length (s).
    #[arg(long, default_value_t = 5.0)]
    lta: f64,
    /// Event mode: STA/LTA ratio that switches the trigger on.
    #[arg(long, default_value_t = 3.0)]
    trigger_on: f64,
    /// Event mode: ratio below which it switches off.
    #[arg(long, default_value_t = 1.0)]
    trigger_off: f64,
    /// Event mode: what the trigger sees, `bandpass:FMIN,FMAX[,CORNERS]` (causal Butterworth on
    /// each component before the modulus; windows keep the raw samples) or `none`.
    #[arg(long, default_value_t = TriggerFilter::default())]
    trigger_filter: TriggerFilter,
    /// Windowing chunk (s): windows are cut this long after their data is complete at most.
    /// Runs compare row for row only with the same value.
    #[arg(long, default_value_t = 1.0)]
    chunk: f64,
    /// Longest gap (samples at 100 Hz, per channel) that is interpolated; longer drops the window.
    #[arg(long, default_value_t = 50)]
    max_gap_fill: usize,
    /// Component order of windows, spectrograms and features.
    #[arg(long, default_value = "NEZ")]
    channel_order: String,
    /// The spectrogram's power scale: `log` (log1p of the PSD) or `linear` (the PSD), as the
    /// study's two CNNs took.
    #[arg(long, default_value = "log", value_parser = ["log", "linear"])]
    spectrogram: String,
    /// Store the study's image pipeline (per-channel min–max, the PNG's 8 bits, normalised with
    /// the training statistics) instead of the spectrogram values.
    #[arg(long, visible_alias = "study-image")]
    image: bool,
    /// With --image: skip the 8-bit quantisation.
    #[arg(long)]
    no_quantize: bool,
    /// With --image: JSON file {"mean": [..3], "std": [..3]} replacing the study's statistics
    /// (the study published them for its log images; give your own for linear ones).
    #[arg(long)]
    stats: Option<PathBuf>,
    /// The 69 waveform features: `study` (the study's feature function, names and
    /// definitions) or `physical` (Welch at the sampling rate, entropy in bits, times in s).
    #[arg(long, default_value = "study")]
    features: String,
    /// Also store each window's 100 Hz samples (a `waveform` column of `windows`, ~30 kB a
    /// window), which waveform models such as `train conv1d` need. Chosen when the lake is
    /// created: a lake with waveforms takes only windows with them, and the other way round.
    #[arg(long)]
    waveforms: bool,
    /// The mainshock whose origin time the windows' `ttf_s` (time to failure, s) counts from,
    /// for catalogues with origin times (the D-set's `source_origin_time`).
    #[arg(long, default_value = quakelens_models::ttf::NORCIA_MAINSHOCK)]
    mainshock: String,
}

impl WindowOptions {
    /// The pipeline settings these options describe, writing to `lake`.
    pub fn config(&self, lake: Option<LakeLocation>) -> anyhow::Result<PipelineConfig> {
        let mut cfg = PipelineConfig::new(lake);
        cfg.mode = match self.mode {
            Mode::Event => WindowMode::Event {
                trigger: TriggerConfig {
                    sta_s: self.sta,
                    lta_s: self.lta,
                    thres_on: self.trigger_on,
                    thres_off: self.trigger_off,
                    filter: self.trigger_filter,
                },
                pre_s: 5.0,
                post_s: 20.0,
            },
            Mode::Sliding => {
                if !(self.length > 0.0 && self.step > 0.0) {
                    bail!(
                        "--length and --step must be positive (got {} and {})",
                        self.length,
                        self.step
                    );
                }
                WindowMode::Sliding {
                    length_s: self.length,
                    step_s: self.step,
                }
            }
        };
        if !(self.sta > 0.0 && self.lta > self.sta) {
            bail!(
                "--lta ({}) must be longer than --sta ({}), both positive",
                self.lta,
                self.sta
            );
        }
        if self.chunk.is_nan() || self.chunk <= 0.0 {
            bail!("--chunk must be positive (got {})", self.chunk);
        }
        cfg.chunk_s = self.chunk;
        cfg.gaps = GapPolicy {
            max_fill_samples: self.max_gap_fill,
        };
        cfg.order = self
            .channel_order
            .parse::<ChannelOrder>()
            .map_err(anyhow::Error::msg)?;
        let power: Power = self.spectrogram.parse().map_err(anyhow::Error::msg)?;
        let scaling = if self.image {
            let stats = match &self.stats {
                Some(path) => ChannelStats::from_json_file(path).map_err(anyhow::Error::msg)?,
                None => ChannelStats::default(),
            };
            ImageScaling::Image {
                quantize: !self.no_quantize,
                stats,
            }
        } else if self.stats.is_some() || self.no_quantize {
            bail!("--stats and --no-quantize only apply with --image");
        } else {
            ImageScaling::Raw
        };
        cfg.input = SpectrogramInput { power, scaling };
        cfg.features = self
            .features
            .parse::<FeatureSet>()
            .map_err(anyhow::Error::msg)?;
        cfg.catalog = self.catalog.clone();
        cfg.waveforms = self.waveforms;
        cfg.mainshock_ns = quakelens_signal::time::parse_utc(&self.mainshock)
            .with_context(|| format!("--mainshock {:?} is not a UTC time", self.mainshock))?;
        Ok(cfg)
    }
}
