//! Spectrograms equal to `scipy.signal.spectrogram(x, fs=100, nperseg=64, noverlap=48)` with
//! scipy's defaults (periodic Tukey(0.25) window, constant detrend per segment, density
//! scaling, one-sided), then `log1p` and, optionally, the reference study's image pipeline.
//!
//! Speed: one FFT plan per [`SpectrogramPlan`], reused; two real segments are packed into one
//! complex FFT (real part, imaginary part) and separated by conjugate symmetry, halving FFTs.

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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChannelStats {
    pub mean: [f64; 3],
    pub std: [f64; 3],
}

impl Default for ChannelStats {
    /// The reference study's statistics of its spectrogram images.
    fn default() -> Self {
        Self {
            mean: [0.2181, 0.2217, 0.2066],
            std: [0.2255, 0.2262, 0.2207],
        }
    }
}

impl ChannelStats {
    /// Reads `{"mean": [m0, m1, m2], "std": [s0, s1, s2]}`.
    pub fn from_json_file(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let stats: Self =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if stats.std.iter().any(|&s| !(s > 0.0 && s.is_finite())) {
            return Err(format!("{}: every std must be positive", path.display()));
        }
        Ok(stats)
    }
}

/// What happens to the log-spectrogram before it is stored and fed to the CNN.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub enum ImageScaling {
    /// `log1p(PSD)` as is.
    #[default]
    Log1p,
    /// The study's image pipeline: per-channel min–max to [0, 1], 8-bit quantisation (it saved
    /// PNGs; `round-half-even(v · 255) / 255`), then `(v − mean[c]) / std[c]`.
    Image { quantize: bool, stats: ChannelStats },
}

/// Turns 3-channel windows into model inputs `[channel][freq][frame]` (f32, C × H × W).
pub struct SpectrogramTransform {
    plan: SpectrogramPlan,
    scaling: ImageScaling,
}

impl SpectrogramTransform {
    pub fn new(params: SpectrogramParams, scaling: ImageScaling) -> Self {
        Self {
            plan: SpectrogramPlan::new(params),
            scaling,
        }
    }

    pub fn params(&self) -> &SpectrogramParams {
        self.plan.params()
    }

    /// Values per window for `n` samples per channel.
    pub fn output_len(&self, n: usize) -> usize {
        3 * self.params().n_freqs() * self.params().n_frames(n)
    }

    /// Transforms one window, appending to `out`.
    pub fn transform(
        &self,
        channels: [&[f64]; 3],
        out: &mut Vec<f32>,
        scratch: &mut TransformScratch,
    ) {
        for (c, x) in channels.iter().enumerate() {
            self.plan.psd(x, &mut scratch.psd, &mut scratch.spec);
            match &self.scaling {
                ImageScaling::Log1p => {
                    let start = out.len();
                    out.extend(scratch.psd.iter().map(|&v| v as f32));
                    for v in out[start..].iter_mut() {
                        *v = ln_1p_f32(*v);
                    }
                }
                // In f64 with libm's log1p, as numpy does: 8-bit quantisation would otherwise
                // flip values that sit on a rounding boundary.
                ImageScaling::Image { quantize, stats } => {
                    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
                    for v in scratch.psd.iter_mut() {
                        *v = v.ln_1p();
                        lo = lo.min(*v);
                        hi = hi.max(*v);
                    }
                    let range = hi - lo;
                    out.extend(scratch.psd.iter().map(|&v| {
                        let mut u = if range > 0.0 { (v - lo) / range } else { 0.0 };
                        if *quantize {
                            u = (u * 255.0).round_ties_even() / 255.0;
                        }
                        ((u - stats.mean[c]) / stats.std[c]) as f32
                    }));
                }
            }
        }
    }
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
            ImageScaling::Image {
                quantize: true,
                stats: ChannelStats {
                    mean: [0.0; 3],
                    std: [1.0; 3],
                },
            },
        );
        let x: Vec<f64> = (0..2500).map(|i| (i as f64 * 0.7).sin() * 100.0).collect();
        let mut out = Vec::new();
        t.transform([&x, &x, &x], &mut out, &mut TransformScratch::default());
        assert_eq!(out.len(), t.output_len(2500));
        let max = out.iter().cloned().fold(f32::MIN, f32::max);
        let min = out.iter().cloned().fold(f32::MAX, f32::min);
        assert_eq!((min, max), (0.0, 1.0));
        for v in &out {
            let q = v * 255.0;
            assert!((q - q.round()).abs() < 1e-4, "not quantised: {v}");
        }
    }
}
