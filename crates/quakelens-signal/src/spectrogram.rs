//! Spectrograms equal to `scipy.signal.spectrogram(x, fs=100, nperseg=64, noverlap=48)` with
//! scipy's defaults (periodic Tukey(0.25) window, constant detrend per segment, density
//! scaling, one-sided), then `log1p` and, optionally, the reference study's image pipeline.
//!
//! Speed: one FFT plan per [`SpectrogramPlan`], reused; two real segments are packed into one
//! complex FFT (real part, imaginary part) and separated by conjugate symmetry, halving FFTs.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};
use serde::{Deserialize, Serialize};

use crate::pairwise::pairwise_sum;
use crate::windows_fn::tukey;

/// scipy's `spectrogram` parameters used by the study.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpectrogramParams {
    pub fs: f64,
    pub nperseg: usize,
    pub noverlap: usize,
}

impl Default for SpectrogramParams {
    fn default() -> Self {
        Self {
            fs: 100.0,
            nperseg: 64,
            noverlap: 48,
        }
    }
}

impl SpectrogramParams {
    pub fn step(&self) -> usize {
        self.nperseg - self.noverlap
    }

    /// Number of frequency rows (one-sided).
    pub fn n_freqs(&self) -> usize {
        self.nperseg / 2 + 1
    }

    /// Number of time columns for `n` samples (0 when shorter than one segment).
    pub fn n_frames(&self, n: usize) -> usize {
        if n < self.nperseg {
            0
        } else {
            (n - self.nperseg) / self.step() + 1
        }
    }

    /// Frequencies of the rows (Hz), as scipy returns them.
    pub fn freqs(&self) -> Vec<f64> {
        (0..self.n_freqs())
            .map(|k| k as f64 * self.fs / self.nperseg as f64)
            .collect()
    }

    /// Segment centre times (s from the first sample), as scipy returns them.
    pub fn times(&self, n: usize) -> Vec<f64> {
        (0..self.n_frames(n))
            .map(|t| (self.nperseg as f64 / 2.0 + (t * self.step()) as f64) / self.fs)
            .collect()
    }
}

/// A reusable FFT plan plus window and scale for one parameter set.
pub struct SpectrogramPlan {
    params: SpectrogramParams,
    fft: Arc<dyn Fft<f64>>,
    window: Vec<f64>,
    /// Density scaling `1 / (fs · Σ w²)`.
    scale: f64,
}

/// Per-thread buffers, so the hot loop allocates nothing.
#[derive(Default)]
pub struct SpectrogramScratch {
    buffer: Vec<Complex<f64>>,
    fft_scratch: Vec<Complex<f64>>,
}

impl SpectrogramPlan {
    pub fn new(params: SpectrogramParams) -> Self {
        assert!(
            params.nperseg >= 2 && params.noverlap < params.nperseg,
            "invalid spectrogram parameters {params:?}"
        );
        let fft = FftPlanner::new().plan_fft_forward(params.nperseg);
        let window = tukey(params.nperseg, 0.25, false);
        let scale = 1.0 / (params.fs * window.iter().map(|w| w * w).sum::<f64>());
        Self {
            params,
            fft,
            window,
            scale,
        }
    }

    pub fn params(&self) -> &SpectrogramParams {
        &self.params
    }

    /// Power spectral density of `x`, row-major `[freq][frame]` (scipy's `Sxx` layout), into `out`
    /// (resized to `n_freqs · n_frames`).
    pub fn psd(&self, x: &[f64], out: &mut Vec<f64>, scratch: &mut SpectrogramScratch) {
        let p = &self.params;
        let (n, step) = (p.nperseg, p.step());
        let frames = p.n_frames(x.len());
        let nf = p.n_freqs();
        // Every element is overwritten below: no need to zero what is already there.
        out.resize(nf * frames, 0.0);
        if frames == 0 {
            return;
        }
        let pairs = frames.div_ceil(2);
        scratch.buffer.resize(pairs * n, Complex::new(0.0, 0.0));
        // Segment 2j goes to the real part of chunk j, segment 2j+1 to its imaginary part
        // (zero when the frame count is odd).
        let inv_n = 1.0 / n as f64;
        for (j, chunk) in scratch.buffer.chunks_exact_mut(n).enumerate() {
            let a = &x[2 * j * step..2 * j * step + n];
            let mean_a = pairwise_sum(a) * inv_n;
            if 2 * j + 1 < frames {
                let b = &x[(2 * j + 1) * step..(2 * j + 1) * step + n];
                let mean_b = pairwise_sum(b) * inv_n;
                for (((c, &va), &vb), &w) in chunk.iter_mut().zip(a).zip(b).zip(&self.window) {
                    *c = Complex::new((va - mean_a) * w, (vb - mean_b) * w);
                }
            } else {
                for ((c, &va), &w) in chunk.iter_mut().zip(a).zip(&self.window) {
                    *c = Complex::new((va - mean_a) * w, 0.0);
                }
            }
        }
        let need = self.fft.get_inplace_scratch_len();
        if scratch.fft_scratch.len() < need {
            scratch.fft_scratch.resize(need, Complex::new(0.0, 0.0));
        }
        self.fft
            .process_with_scratch(&mut scratch.buffer, &mut scratch.fft_scratch[..need]);
        // One-sided density: every bin doubled but DC and (even-length) Nyquist.
        let edge = 0.25 * self.scale;
        let inner = 0.5 * self.scale;
        let nyquist = if n % 2 == 0 { nf - 1 } else { usize::MAX };
        let spectra = &scratch.buffer;
        for (k, row) in out.chunks_exact_mut(frames).enumerate() {
            let mirror = if k == 0 { 0 } else { n - k };
            // A = (P + Q)/2 is segment 2j's spectrum, B = (P − Q)/2i segment 2j+1's.
            let s = if k == 0 || k == nyquist { edge } else { inner };
            for (pair, z) in row.chunks_mut(2).zip(spectra.chunks_exact(n)) {
                let (p, q) = (z[k], z[mirror].conj());
                pair[0] = (p + q).norm_sqr() * s;
                if let Some(b) = pair.get_mut(1) {
                    *b = (p - q).norm_sqr() * s;
                }
            }
        }
    }
}

/// Per-channel normalisation statistics of the image pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChannelStats {
    pub mean: [f64; 3],
    pub std: [f64; 3],
}

impl Default for ChannelStats {
    /// The reference study's statistics of its log-spectrogram images.
    fn default() -> Self {
        Self {
            mean: [0.2181, 0.2217, 0.2066],
            std: [0.2255, 0.2262, 0.2207],
        }
    }
}

impl ChannelStats {
    /// Mean 0 and standard deviation 1: the values after min–max, unchanged.
    pub const IDENTITY: ChannelStats = ChannelStats {
        mean: [0.0; 3],
        std: [1.0; 3],
    };

    /// Reads `{"mean": [m0, m1, m2], "std": [s0, s1, s2]}`.
    pub fn from_json_file(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let stats: Self =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        stats
            .validate()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(stats)
    }

    fn validate(&self) -> Result<(), String> {
        if self.std.iter().any(|&s| !(s > 0.0 && s.is_finite()))
            || self.mean.iter().any(|m| !m.is_finite())
        {
            return Err("every mean must be finite and every std positive".into());
        }
        Ok(())
    }
}

/// The power scale of the stored spectrogram: the study made images of both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Power {
    /// `log1p(PSD)`.
    #[default]
    Log,
    /// The PSD itself.
    Linear,
}

impl Power {
    pub fn name(self) -> &'static str {
        match self {
            Power::Log => "log",
            Power::Linear => "linear",
        }
    }
}

impl FromStr for Power {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "log" => Ok(Power::Log),
            "linear" => Ok(Power::Linear),
            other => Err(format!("unknown spectrogram {other:?}: use log or linear")),
        }
    }
}

/// What happens to the spectrogram before it is stored and fed to the CNN.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, Default)]
pub enum ImageScaling {
    /// The values as they are (f32).
    #[default]
    Raw,
    /// The study's image pipeline per channel: min–max to [0, 1]; with `quantize` the PNG
    /// round trip (matplotlib's `imsave` writes `floor(v · 255)`, PIL reads the bytes back,
    /// `/ 255` in f32 as torchvision's `ToTensor`); then `(v − mean[c]) / std[c]` (in f32 after
    /// quantisation, as torchvision's `Normalize`). A constant channel (max = min, NaN in the
    /// study) becomes 0 before normalisation and is counted (see [`SpectrogramTransform::transform`]).
    Image { quantize: bool, stats: ChannelStats },
}

/// What a stored spectrogram is, in one comparable value: a CNN records the input it was
/// trained on and refuses windows of another. Written as `log`, `linear`, or with the image
/// pipeline `log+png+norm(m0,m1,m2/s0,s1,s2)` (`minmax` instead of `png` without quantisation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SpectrogramInput {
    pub power: Power,
    pub scaling: ImageScaling,
}

impl SpectrogramInput {
    /// The study's log-spectrogram PNG images with its statistics.
    pub fn study_image(power: Power) -> Self {
        Self {
            power,
            scaling: ImageScaling::Image {
                quantize: true,
                stats: ChannelStats::default(),
            },
        }
    }
}

impl fmt::Display for SpectrogramInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.power.name())?;
        if let ImageScaling::Image { quantize, stats } = &self.scaling {
            let list = |v: &[f64; 3]| v.map(|x| x.to_string()).join(",");
            write!(
                f,
                "+{}+norm({}/{})",
                if *quantize { "png" } else { "minmax" },
                list(&stats.mean),
                list(&stats.std)
            )?;
        }
        Ok(())
    }
}

impl FromStr for SpectrogramInput {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("{s:?} is not a spectrogram input (e.g. log, linear, log+png+norm(m0,m1,m2/s0,s1,s2))")
        };
        let mut parts = s.splitn(3, '+');
        let power: Power = parts.next().unwrap_or_default().parse()?;
        let scaling = match (parts.next(), parts.next()) {
            (None, _) => ImageScaling::Raw,
            (Some(kind), Some(norm)) => {
                let quantize = match kind {
                    "png" => true,
                    "minmax" => false,
                    _ => return Err(bad()),
                };
                let inner = norm
                    .strip_prefix("norm(")
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(bad)?;
                let (mean, std) = inner.split_once('/').ok_or_else(bad)?;
                let three = |t: &str| -> Result<[f64; 3], String> {
                    let v: Vec<f64> = t
                        .split(',')
                        .map(|x| x.trim().parse::<f64>().map_err(|_| bad()))
                        .collect::<Result<_, _>>()?;
                    v.try_into().map_err(|_| bad())
                };
                let stats = ChannelStats {
                    mean: three(mean)?,
                    std: three(std)?,
                };
                stats.validate().map_err(|e| format!("{s:?}: {e}"))?;
                ImageScaling::Image { quantize, stats }
            }
            _ => return Err(bad()),
        };
        Ok(Self { power, scaling })
    }
}

/// Turns 3-channel windows into model inputs `[channel][freq][frame]` (f32, C × H × W).
pub struct SpectrogramTransform {
    plan: SpectrogramPlan,
    input: SpectrogramInput,
}

impl SpectrogramTransform {
    pub fn new(params: SpectrogramParams, input: SpectrogramInput) -> Self {
        Self {
            plan: SpectrogramPlan::new(params),
            input,
        }
    }

    pub fn params(&self) -> &SpectrogramParams {
        self.plan.params()
    }

    pub fn input(&self) -> &SpectrogramInput {
        &self.input
    }

    /// Values per window for `n` samples per channel.
    pub fn output_len(&self, n: usize) -> usize {
        3 * self.params().n_freqs() * self.params().n_frames(n)
    }

    /// Transforms one window, appending to `out`; returns how many channels were constant
    /// (a dead channel: its PSD is flat, so the image pipeline has no range to scale).
    pub fn transform(
        &self,
        channels: [&[f64]; 3],
        out: &mut Vec<f32>,
        scratch: &mut TransformScratch,
    ) -> u32 {
        let mut flat = 0;
        for (c, x) in channels.iter().enumerate() {
            self.plan.psd(x, &mut scratch.psd, &mut scratch.spec);
            let (lo, hi) = scratch
                .psd
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                    (lo.min(v), hi.max(v))
                });
            // Flat also when no value is finite (NaN compares false).
            flat += u32::from(hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater));
            match (&self.input.scaling, self.input.power) {
                (ImageScaling::Raw, Power::Log) => {
                    let start = out.len();
                    out.extend(scratch.psd.iter().map(|&v| v as f32));
                    for v in out[start..].iter_mut() {
                        *v = ln_1p_f32(*v);
                    }
                }
                (ImageScaling::Raw, Power::Linear) => {
                    out.extend(scratch.psd.iter().map(|&v| v as f32));
                }
                // In f64 with libm's log1p, as numpy does: 8-bit quantisation would otherwise
                // flip values that sit on a rounding boundary.
                (ImageScaling::Image { quantize, stats }, power) => {
                    if power == Power::Log {
                        for v in scratch.psd.iter_mut() {
                            *v = v.ln_1p();
                        }
                    }
                    // log1p is monotonic: the extremes move with it.
                    let (lo, hi) = if power == Power::Log {
                        (lo.ln_1p(), hi.ln_1p())
                    } else {
                        (lo, hi)
                    };
                    let range = hi - lo;
                    let unit = |v: f64| if range > 0.0 { (v - lo) / range } else { 0.0 };
                    if *quantize {
                        let (mean, std) = (stats.mean[c] as f32, stats.std[c] as f32);
                        out.extend(scratch.psd.iter().map(|&v| {
                            // `(u * 255).astype(np.uint8)`: truncation, u ≥ 0.
                            let byte = (unit(v) * 255.0) as u8;
                            (f32::from(byte) / 255.0 - mean) / std
                        }));
                    } else {
                        let (mean, std) = (stats.mean[c], stats.std[c]);
                        out.extend(scratch.psd.iter().map(|&v| ((unit(v) - mean) / std) as f32));
                    }
                }
            }
        }
        flat
    }
}

/// The bytes the study's PNG holds for one stored value of a `png` image input
/// (`round((v · std + mean) · 255)`; exact, since the value came from a byte).
pub fn image_byte(value: f32, mean: f64, std: f64) -> u8 {
    ((value as f64 * std + mean) * 255.0)
        .round()
        .clamp(0.0, 255.0) as u8
}

/// `ln(1 + x)` for `x ≥ 0` in f32 (the storage type), within a few f32 ulps, branch-free so the
/// compiler vectorises it four lanes wide (libm's `log1p` is one call per value and dominated the
/// spectrogram transform).
///
/// `u = 1 + x` is split into mantissa `m ∈ [√½, √2)` and exponent `e`; `ln m` comes from the
/// atanh series in `s = (m − 1)/(m + 1)` (|s| ≤ 0.172, terms to s⁹). Goldberg's correction
/// `ln(u) · x / (u − 1)` restores the accuracy lost when rounding `1 + x` for small `x`.
#[inline]
pub fn ln_1p_f32(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let u = 1.0 + x;
    let bits = u.to_bits();
    let exponent = ((bits >> 23) & 0xff) as i32 - 127;
    let mantissa = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
    let big = mantissa > std::f32::consts::SQRT_2;
    let m = if big { mantissa * 0.5 } else { mantissa };
    let e = (exponent + big as i32) as f32;
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let series = 1.0 + s2 * (1.0 / 3.0 + s2 * (1.0 / 5.0 + s2 * (1.0 / 7.0 + s2 * (1.0 / 9.0))));
    let ln_u = e * LN2_HI + (e * LN2_LO + 2.0 * s * series);
    let d = u - 1.0;
    if d == 0.0 {
        x
    } else {
        ln_u * (x / d)
    }
}

/// Per-thread buffers of [`SpectrogramTransform`].
#[derive(Default)]
pub struct TransformScratch {
    psd: Vec<f64>,
    spec: SpectrogramScratch,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct O(N²) DFT periodogram of one segment, the textbook definition.
    fn naive_segment_psd(seg: &[f64], fs: f64) -> Vec<f64> {
        let n = seg.len();
        let w = tukey(n, 0.25, false);
        let mean = seg.iter().sum::<f64>() / n as f64;
        let scale = 1.0 / (fs * w.iter().map(|v| v * v).sum::<f64>());
        (0..=n / 2)
            .map(|k| {
                let (mut re, mut im) = (0.0, 0.0);
                for (i, (&v, &wi)) in seg.iter().zip(&w).enumerate() {
                    let ang = -2.0 * std::f64::consts::PI * (k * i) as f64 / n as f64;
                    re += (v - mean) * wi * ang.cos();
                    im += (v - mean) * wi * ang.sin();
                }
                let d = if k == 0 || k == n / 2 { 1.0 } else { 2.0 };
                (re * re + im * im) * scale * d
            })
            .collect()
    }

    #[test]
    fn matches_textbook_definition_for_odd_and_even_frame_counts() {
        let params = SpectrogramParams::default();
        let plan = SpectrogramPlan::new(params);
        for n in [2500usize, 2484] {
            let x: Vec<f64> = (0..n)
                .map(|i| ((i * 7919) % 1000) as f64 / 10.0 + (i as f64 * 0.3).sin())
                .collect();
            let mut out = Vec::new();
            plan.psd(&x, &mut out, &mut SpectrogramScratch::default());
            let frames = params.n_frames(n);
            assert_eq!(out.len(), 33 * frames);
            for t in [0, 1, frames / 2, frames - 1] {
                let naive = naive_segment_psd(&x[t * 16..t * 16 + 64], 100.0);
                for k in 0..33 {
                    let got = out[k * frames + t];
                    assert!(
                        (got - naive[k]).abs() <= 1e-9 * naive[k].abs().max(1e-12),
                        "n={n} t={t} k={k}: {got} vs {}",
                        naive[k]
                    );
                }
            }
        }
        assert_eq!(params.n_frames(2500), 153);
        assert_eq!(params.n_frames(10), 0);
        assert_eq!(params.freqs()[32], 50.0);
        assert_eq!(params.times(2500)[0], 0.32);
    }

    #[test]
    fn fast_log1p_is_accurate_over_the_psd_range() {
        let mut worst: f64 = 0.0;
        let mut x: f32 = 1e-38;
        while x < 1e37 {
            for k in [1.0f32, 1.37, 2.9, 7.77] {
                let v = x * k;
                let want = (v as f64).ln_1p();
                worst = worst.max((ln_1p_f32(v) as f64 - want).abs() / want);
            }
            x *= 1.3;
        }
        assert_eq!(ln_1p_f32(0.0), 0.0);
        // A few f32 ulps (ε = 1.2e-7).
        assert!(worst < 4e-7, "worst relative error {worst:e}");
    }

    #[test]
    fn image_pipeline_bounds() {
        let t = SpectrogramTransform::new(
            SpectrogramParams::default(),
            SpectrogramInput {
                power: Power::Log,
                scaling: ImageScaling::Image {
                    quantize: true,
                    stats: ChannelStats::IDENTITY,
                },
            },
        );
        let x: Vec<f64> = (0..2500).map(|i| (i as f64 * 0.7).sin() * 100.0).collect();
        let mut out = Vec::new();
        let flat = t.transform([&x, &x, &x], &mut out, &mut TransformScratch::default());
        assert_eq!((out.len(), flat), (t.output_len(2500), 0));
        let max = out.iter().cloned().fold(f32::MIN, f32::max);
        let min = out.iter().cloned().fold(f32::MAX, f32::min);
        assert_eq!((min, max), (0.0, 1.0));
        for v in &out {
            let q = v * 255.0;
            assert!((q - q.round()).abs() < 1e-4, "not quantised: {v}");
        }
    }

    #[test]
    fn inputs_are_written_and_read_back() {
        for input in [
            SpectrogramInput::default(),
            SpectrogramInput {
                power: Power::Linear,
                scaling: ImageScaling::Raw,
            },
            SpectrogramInput::study_image(Power::Log),
            SpectrogramInput {
                power: Power::Linear,
                scaling: ImageScaling::Image {
                    quantize: false,
                    stats: ChannelStats {
                        mean: [0.1, 0.2, 1e-3],
                        std: [0.5, 2.0, 0.25],
                    },
                },
            },
        ] {
            let text = input.to_string();
            assert_eq!(text.parse::<SpectrogramInput>(), Ok(input), "{text}");
        }
        assert_eq!(
            SpectrogramInput::study_image(Power::Log).to_string(),
            "log+png+norm(0.2181,0.2217,0.2066/0.2255,0.2262,0.2207)"
        );
        for bad in [
            "",
            "loud",
            "log+png",
            "log+jpeg+norm(1,2,3/1,1,1)",
            "log+png+norm(1,2/1,1)",
            "log+png+norm(0,0,0/1,0,1)",
        ] {
            assert!(bad.parse::<SpectrogramInput>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_dead_channel_is_counted_and_stored_as_zero() {
        let t = SpectrogramTransform::new(
            SpectrogramParams::default(),
            SpectrogramInput::study_image(Power::Log),
        );
        let live: Vec<f64> = (0..2500).map(|i| (i as f64 * 0.3).sin()).collect();
        let dead = vec![4.0; 2500];
        let mut out = Vec::new();
        let flat = t.transform(
            [&live, &dead, &live],
            &mut out,
            &mut TransformScratch::default(),
        );
        assert_eq!(flat, 1);
        let stats = ChannelStats::default();
        let per = out.len() / 3;
        let want = (0.0f32 - stats.mean[1] as f32) / stats.std[1] as f32;
        assert!(out[per..2 * per].iter().all(|&v| v == want));
        assert!(out.iter().all(|v| v.is_finite()));
        assert_eq!(image_byte(out[per], stats.mean[1], stats.std[1]), 0);
    }
}
