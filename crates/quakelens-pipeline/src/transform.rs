//! Transform stage: spectrograms and features for batches of windows, in parallel with per-thread
//! plans and buffers.

use rayon::prelude::*;

use quakelens_lake::WindowRecord;
use quakelens_signal::features::{FeatureExtractor, FeatureSet};
use quakelens_signal::spectrogram::{SpectrogramTransform, TransformScratch};
use quakelens_signal::window::Window;
use quakelens_signal::TARGET_RATE_HZ;

use crate::config::PipelineConfig;

/// Holds the (immutable, shared) spectrogram plan and the feature set.
pub struct WindowTransformer {
    spectrogram: SpectrogramTransform,
    features: FeatureSet,
    /// Keep each window's samples in the record (lakes for waveform models).
    waveforms: bool,
}

impl WindowTransformer {
    /// The transformer a pipeline's settings ask for.
    pub fn for_config(cfg: &PipelineConfig) -> Self {
        Self {
            spectrogram: SpectrogramTransform::new(cfg.spectrogram, cfg.input),
            features: cfg.features,
            waveforms: cfg.waveforms,
        }
    }

    /// Turns windows into lake records (labels left empty), preserving order.
    pub fn transform(&self, windows: &[Window], on_window: impl Fn() + Sync) -> Vec<WindowRecord> {
        windows
            .par_iter()
            .map_init(
                || {
                    (
                        TransformScratch::default(),
                        FeatureExtractor::new(self.features, TARGET_RATE_HZ),
                    )
                },
                |(scratch, fx), w| {
                    let channels = [
                        w.data[0].as_slice(),
                        w.data[1].as_slice(),
                        w.data[2].as_slice(),
                    ];
                    let mut spectrogram =
                        Vec::with_capacity(self.spectrogram.output_len(w.samples()));
                    let flat = self
                        .spectrogram
                        .transform(channels, &mut spectrogram, scratch);
                    let features = fx.window_features(channels).to_vec();
                    on_window();
                    let mut r = record(w, spectrogram, features, flat);
                    if self.waveforms {
                        r.waveform = channels
                            .iter()
                            .flat_map(|c| c.iter().map(|&v| v as f32))
                            .collect();
                    }
                    r
                },
            )
            .collect()
    }
}

fn record(w: &Window, spectrogram: Vec<f32>, features: Vec<f64>, flat: u32) -> WindowRecord {
    WindowRecord {
        window_id: w.id.clone(),
        network: w.station.network.clone(),
        station: w.station.station.clone(),
        location: w.station.location.clone(),
        band: w.station.band.clone(),
        start_ns: w.start_ns,
        end_ns: w.end_ns(),
        onset_ns: w.onset_ns,
        mode: w.mode.to_string(),
        trigger_ratio: w.trigger_ratio,
        sample_rate: TARGET_RATE_HZ,
        source_rate: w.source_rate,
        resampled: w.resampled,
        gap_runs: w.gap_runs as i32,
        filled_samples: w.filled_samples as i32,
        flat_channels: flat as i32,
        channel_order: w.order.to_string(),
        event_id: None,
        label: None,
        magnitude: None,
        ttf_s: None,
        source: Default::default(),
        catalog: Vec::new(),
        spectrogram,
        features,
        waveform: Vec::new(),
    }
}

/// The frequency and time axes of spectrograms of `shape` (`[channels, freqs, frames]`) made
/// with the study's parameters (fs 100 Hz, nperseg 64, noverlap 48), or why `shape` does not
/// come from them.
pub fn spectrogram_axes(shape: [usize; 3]) -> Result<quakelens_lake::SpectrogramAxes, String> {
    let params = quakelens_signal::spectrogram::SpectrogramParams::default();
    let [channels, height, width] = shape;
    if width == 0 {
        return Err("spectrograms without frames".into());
    }
    let samples = (width - 1) * params.step() + params.nperseg;
    let axes = quakelens_lake::SpectrogramAxes {
        channels,
        freqs_hz: params.freqs(),
        times_s: params.times(samples),
    };
    if axes.freqs_hz.len() != height || axes.times_s.len() != width {
        return Err(format!(
            "spectrograms of {height} × {width} do not come from the study's parameters"
        ));
    }
    Ok(axes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use quakelens_signal::stream::{ChannelOrder, StationKey};

    #[test]
    fn a_waveform_lake_gets_each_windows_samples_in_channel_order() {
        let data: [Vec<f64>; 3] =
            std::array::from_fn(|c| (0..2500).map(|i| (c * 10_000 + i) as f64 - 0.25).collect());
        let window = Window {
            id: "w".into(),
            station: StationKey {
                network: "XX".into(),
                station: "S".into(),
                location: "00".into(),
                band: "HH".into(),
            },
            start_ns: 0,
            data: data.clone(),
            order: ChannelOrder::default(),
            mode: "event",
            onset_ns: None,
            trigger_ratio: None,
            gap_runs: 0,
            filled_samples: 0,
            source_rate: 100.0,
            resampled: false,
        };
        let mut cfg = PipelineConfig::new(None);
        let plain =
            WindowTransformer::for_config(&cfg).transform(std::slice::from_ref(&window), || {});
        assert!(plain[0].waveform.is_empty());
        cfg.waveforms = true;
        assert_eq!(cfg.format().waveform, Some([3, 2500]));
        let kept = WindowTransformer::for_config(&cfg).transform(&[window], || {});
        let want: Vec<f32> = data.iter().flatten().map(|&v| v as f32).collect();
        assert_eq!(kept[0].waveform, want);
        assert_eq!(kept[0].spectrogram, plain[0].spectrogram);
    }
}
