//! The 69 waveform features per 3-component window (23 per channel), the inputs of the
//! random-forest magnitude model, in two named sets:
//!
//! - [`FeatureSet::Study`] (the default): the study's own feature function, name for name and
//!   definition for definition, so a user's feature tables and forests carry over unchanged.
//!   Its spectral features come from `scipy.signal.welch(x)` with every default, so `fs` is 1
//!   (frequencies in cycles per sample) and rise/fall times are sample counts.
//! - [`FeatureSet::Physical`]: the same statistics with physical units (Welch at the window's
//!   sampling rate, entropy in bits, rise and fall times in seconds around the envelope peak).
//!
//! Every definition is the numpy/scipy expression named beside it; sums use numpy's pairwise
//! summation so results agree with numpy to rounding. Columns are named `f{k}_c{c}_{name}`
//! (k = 1..23, c = channel index in window order), channel-major.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};
use serde::{Deserialize, Serialize};

use crate::pairwise::{pairwise_sum, pairwise_sums};
use crate::windows_fn::hann_periodic;

pub const FEATURES_PER_CHANNEL: usize = 23;
pub const FEATURES_PER_WINDOW: usize = 3 * FEATURES_PER_CHANNEL;

/// Which definitions (and column names) the waveform features follow. Stored with the
/// `features` table and in every forest, so a forest never scores features of another set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeatureSet {
    /// The study's definitions (its notebooks' feature function).
    #[default]
    Study,
    /// Physical units: Welch at the sampling rate, entropy in bits, times in seconds.
    Physical,
}

/// The study's names, each defined by the numpy/scipy expression beside it (`x` = one channel,
/// `f, P = scipy.signal.welch(x)` with all defaults).
const STUDY_NAMES: [&str; FEATURES_PER_CHANNEL] = [
    "maximum_amplitude",       // np.max(x)
    "minimum_amplitude",       // np.min(x)
    "mean_amplitude",          // np.mean(x)
    "std_dev_amplitude",       // np.std(x)
    "median_amplitude",        // np.median(x)
    "signal_range",            // np.ptp(x)
    "total_energy",            // np.sum(x**2)
    "root_mean_square",        // np.sqrt(np.mean(x**2))
    "absolute_mean_amplitude", // np.mean(np.abs(x))
    "peak_spectral_power",     // np.max(P)
    "dominant_frequency",      // f[np.argmax(P)]  (cycles per sample)
    "mean_spectral_power",     // np.mean(P)
    "spectral_entropy",        // scipy.stats.entropy(P / np.sum(P))  (natural log)
    "spectral_flatness",       // np.exp(np.mean(np.log(P))) / np.mean(P)
    "num_zero_crossings",      // len(np.where(np.diff(np.signbit(x)))[0])
    "num_peaks",               // len(scipy.signal.find_peaks(x)[0])
    "kurtosis",                // scipy.stats.kurtosis(x)  (Fisher, biased)
    "skewness",                // scipy.stats.skew(x)
    "variance",                // np.var(x)
    "iqr",                     // np.percentile(x, 75) - np.percentile(x, 25)  (linear)
    "rise_time",               // np.argmax(x)  (samples)
    "fall_time",               // len(x) - np.argmax(x)  (samples)
    "peak_to_peak_amplitude",  // np.max(x) - np.min(x)
];

/// The physical set's names (`f, P = scipy.signal.welch(x, fs)`).
const PHYSICAL_NAMES: [&str; FEATURES_PER_CHANNEL] = [
    "maximum_amplitude",       // np.max(x)
    "minimum_amplitude",       // np.min(x)
    "mean_amplitude",          // np.mean(x)
    "standard_deviation",      // np.std(x)
    "median_amplitude",        // np.median(x)
    "amplitude_range",         // np.max(x) - np.min(x)
    "energy",                  // np.sum(x**2)
    "root_mean_square",        // np.sqrt(np.mean(x**2))
    "mean_absolute_amplitude", // np.mean(np.abs(x))
    "welch_peak_power",        // np.max(P)
    "dominant_frequency",      // f[np.argmax(P)]  (Hz)
    "welch_mean_power",        // np.mean(P)
    "spectral_entropy",        // p = P/np.sum(P); -np.sum(p[p>0] * np.log2(p[p>0]))
    "spectral_flatness",       // exp(np.mean(np.log(P))) / np.mean(P), 0 if any P == 0
    "zero_crossings",          // np.count_nonzero(np.diff(np.sign(x)))
    "number_of_peaks",         // len(scipy.signal.find_peaks(x)[0])
    "kurtosis",                // scipy.stats.kurtosis(x)  (Fisher, biased)
    "skewness",                // scipy.stats.skew(x)      (biased)
    "variance",                // np.var(x)
    "interquartile_range",     // np.percentile(x, 75) - np.percentile(x, 25)  (linear)
    "rise_time",               // a=|x-mean|, p=argmax(a): (p - first i with a>=0.1a[p]) / fs
    "fall_time",               // (last i with a>=0.1a[p] - p) / fs
    "peak_to_peak_amplitude",  // np.ptp(x)
];

impl FeatureSet {
    pub const ALL: [FeatureSet; 2] = [FeatureSet::Study, FeatureSet::Physical];

    pub fn name(self) -> &'static str {
        match self {
            FeatureSet::Study => "study",
            FeatureSet::Physical => "physical",
        }
    }

    /// The 23 per-channel names.
    pub fn feature_names(self) -> &'static [&'static str; FEATURES_PER_CHANNEL] {
        match self {
            FeatureSet::Study => &STUDY_NAMES,
            FeatureSet::Physical => &PHYSICAL_NAMES,
        }
    }

    /// The 69 column names, channel-major: `f1_c0_maximum_amplitude` … `f23_c2_…`.
    pub fn column_names(self) -> Vec<String> {
        let names = self.feature_names();
        (0..3)
            .flat_map(|c| {
                names
                    .iter()
                    .enumerate()
                    .map(move |(k, name)| format!("f{}_c{c}_{name}", k + 1))
            })
            .collect()
    }

    /// The set whose columns include `column` (the study's when both do).
    pub fn owning(column: &str) -> Option<FeatureSet> {
        Self::ALL
            .into_iter()
            .find(|s| s.column_names().iter().any(|c| c == column))
    }
}

impl fmt::Display for FeatureSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FeatureSet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|set| set.name() == s)
            .ok_or_else(|| format!("unknown feature set {s:?}: use study or physical"))
    }
}

/// The default set's column names.
pub fn column_names() -> Vec<String> {
    FeatureSet::default().column_names()
}

/// numpy's `_lerp`, used by `np.percentile(..., method='linear')`.
fn lerp(a: f64, b: f64, t: f64) -> f64 {
    let diff = b - a;
    if t >= 0.5 {
        b - diff * (1.0 - t)
    } else {
        a + diff * t
    }
}

/// Welch PSD plan matching `scipy.signal.welch(x, fs)` defaults: periodic Hann, nperseg = 256
/// (or the signal length if shorter), 50 % overlap, constant detrend, density, one-sided, mean.
struct WelchPlan {
    nperseg: usize,
    /// The sampling rate the density scale was made for.
    fs: f64,
    fft: Arc<dyn RealToComplex<f64>>,
    window: Vec<f64>,
    scale: f64,
}

impl WelchPlan {
    fn new(nperseg: usize, fs: f64) -> Self {
        let window = hann_periodic(nperseg);
        let scale = 1.0 / (fs * window.iter().map(|w| w * w).sum::<f64>());
        Self {
            nperseg,
            fs,
            fft: RealFftPlanner::<f64>::new().plan_fft_forward(nperseg),
            window,
            scale,
        }
    }
}

/// What both sets compute the same way for one channel.
struct Moments {
    max: f64,
    min: f64,
    mean: f64,
    energy: f64,
    mean_abs: f64,
    variance: f64,
    kurtosis: f64,
    skewness: f64,
    median: f64,
    iqr: f64,
    peaks: f64,
}

/// Computes the 69 features of 3-channel windows; holds plans and buffers (one per thread).
pub struct FeatureExtractor {
    set: FeatureSet,
    fs: f64,
    welch: Option<WelchPlan>,
    keys: Vec<i64>,
    work: Vec<f64>,
    seg: Vec<f64>,
    spec: Vec<Complex<f64>>,
    psd: Vec<f64>,
    fft_scratch: Vec<Complex<f64>>,
}

impl FeatureExtractor {
    /// Features of `set` for windows sampled at `fs` Hz (the study's set does not use `fs`).
    pub fn new(set: FeatureSet, fs: f64) -> Self {
        Self {
            set,
            fs,
            welch: None,
            keys: Vec::new(),
            work: Vec::new(),
            seg: Vec::new(),
            spec: Vec::new(),
            psd: Vec::new(),
            fft_scratch: Vec::new(),
        }
    }

    pub fn set(&self) -> FeatureSet {
        self.set
    }

    /// Features of one 3-channel window, channel-major (see [`FeatureSet::column_names`]).
    pub fn window_features(&mut self, channels: [&[f64]; 3]) -> [f64; FEATURES_PER_WINDOW] {
        let mut out = [0.0; FEATURES_PER_WINDOW];
        for (c, x) in channels.iter().enumerate() {
            let f = self.channel_features(x);
            out[c * FEATURES_PER_CHANNEL..(c + 1) * FEATURES_PER_CHANNEL].copy_from_slice(&f);
        }
        out
    }

    /// The 23 features of one channel. An empty channel gives NaN everywhere.
    pub fn channel_features(&mut self, x: &[f64]) -> [f64; FEATURES_PER_CHANNEL] {
        if x.is_empty() {
            return [f64::NAN; FEATURES_PER_CHANNEL];
        }
        let m = self.moments(x);
        match self.set {
            FeatureSet::Study => self.study(x, &m),
            FeatureSet::Physical => self.physical(x, &m),
        }
    }

    fn study(&mut self, x: &[f64], m: &Moments) -> [f64; FEATURES_PER_CHANNEL] {
        let n = x.len() as f64;
        self.welch_psd(x, 1.0);
        let psd = &self.psd;
        let (arg, peak_power) = first_max(psd);
        let nperseg = self.welch.as_ref().map_or(1, |w| w.nperseg);
        // rfftfreq(nperseg, d=1): k · (1 / nperseg).
        let dominant = arg as f64 * (1.0 / nperseg as f64);
        let total = pairwise_sum(psd);
        let mean_power = total / psd.len() as f64;
        // scipy.stats.entropy normalises its argument (already P / ΣP) once more, then sums
        // special.entr(q) = -q ln q (0 at q = 0).
        self.work.clear();
        self.work.extend(psd.iter().map(|&p| p / total));
        let again = pairwise_sum(&self.work);
        for q in self.work.iter_mut() {
            let r = *q / again;
            *q = if r > 0.0 {
                -r * r.ln()
            } else if r == 0.0 {
                0.0
            } else {
                f64::NAN
            };
        }
        let entropy = pairwise_sum(&self.work);
        // np.log(0) = -inf makes the mean -inf and exp(-inf) = 0; 0/0 when P is all zero.
        self.work.clear();
        self.work.extend(self.psd.iter().map(|p| p.ln()));
        let flatness = (pairwise_sum(&self.work) / self.psd.len() as f64).exp() / mean_power;
        let crossings = x
            .windows(2)
            .map(|w| (w[0].is_sign_negative() != w[1].is_sign_negative()) as usize)
            .sum::<usize>() as f64;
        let (argmax, _) = first_max(x);
        [
            m.max,
            m.min,
            m.mean,
            m.variance.sqrt(),
            m.median,
            m.max - m.min,
            m.energy,
            (m.energy / n).sqrt(),
            m.mean_abs,
            peak_power,
            dominant,
            mean_power,
            entropy,
            flatness,
            crossings,
            m.peaks,
            m.kurtosis,
            m.skewness,
            m.variance,
            m.iqr,
            argmax as f64,
            n - argmax as f64,
            m.max - m.min,
        ]
    }

    fn physical(&mut self, x: &[f64], m: &Moments) -> [f64; FEATURES_PER_CHANNEL] {
        let n = x.len() as f64;
        let fs = self.fs;
        self.welch_psd(x, fs);
        let psd = &self.psd;
        let (arg, peak_power) = first_max(psd);
        let nperseg = self.welch.as_ref().map_or(1, |w| w.nperseg);
        let dominant = arg as f64 * fs / nperseg as f64;
        let total = pairwise_sum(psd);
        let mean_power = total / psd.len() as f64;
        self.work.clear();
        self.work.extend(psd.iter().filter(|&&p| p > 0.0).map(|&p| {
            let q = p / total;
            q * q.log2()
        }));
        let entropy = -pairwise_sum(&self.work);
        let flatness = if psd.contains(&0.0) {
            0.0
        } else {
            self.work.clear();
            self.work.extend(psd.iter().map(|p| p.ln()));
            (pairwise_sum(&self.work) / psd.len() as f64).exp() / mean_power
        };
        // np.sign is -1, 0 or 1; count where consecutive signs differ (branch-free).
        let sign = |v: f64| (v > 0.0) as i8 - (v < 0.0) as i8;
        let crossings = x
            .windows(2)
            .map(|w| (sign(w[0]) != sign(w[1])) as usize)
            .sum::<usize>() as f64;
        let (rise, fall) = rise_fall_times(x, m.mean, fs);
        [
            m.max,
            m.min,
            m.mean,
            m.variance.sqrt(),
            m.median,
            m.max - m.min,
            m.energy,
            (m.energy / n).sqrt(),
            m.mean_abs,
            peak_power,
            dominant,
            mean_power,
            entropy,
            flatness,
            crossings,
            m.peaks,
            m.kurtosis,
            m.skewness,
            m.variance,
            m.iqr,
            rise,
            fall,
            m.max - m.min,
        ]
    }

    /// The statistics both sets share, as numpy and scipy.stats compute them.
    fn moments(&mut self, x: &[f64]) -> Moments {
        let nf = x.len() as f64;
        // Samples are finite (the decoder refuses NaN/inf), so plain comparisons suffice and
        // let the loop vectorise.
        let (mut max, mut min) = (f64::NEG_INFINITY, f64::INFINITY);
        for &v in x {
            max = if v > max { v } else { max };
            min = if v < min { v } else { min };
        }
        let [sum, energy, sum_abs] = pairwise_sums(x, |v| [v, v * v, v.abs()]);
        let mean = sum / nf;
        // Central moments as scipy.stats computes them (deviations from np.mean; d⁴ = (d²)²).
        let [s2, s3, s4] = pairwise_sums(x, |v| {
            let d = v - mean;
            let d2 = d * d;
            [d2, d2 * d, d2 * d2]
        });
        let (m2, m3, m4) = (s2 / nf, s3 / nf, s4 / nf);
        // scipy: zero = m2 <= (eps * mean)**2 → NaN.
        let degenerate = m2 <= (f64::EPSILON * mean) * (f64::EPSILON * mean);
        let (kurtosis, skewness) = if degenerate {
            (f64::NAN, f64::NAN)
        } else {
            (m4 / (m2 * m2) - 3.0, m3 / m2.powf(1.5))
        };
        let (median, iqr) = self.order_statistics(x);
        Moments {
            max,
            min,
            mean,
            energy,
            mean_abs: sum_abs / nf,
            variance: m2,
            kurtosis,
            skewness,
            median,
            iqr,
            peaks: count_local_maxima(x) as f64,
        }
    }

    /// Median and interquartile range (numpy's linear percentiles) by selection, not a sort:
    /// the median splits the data, each quartile is then selected in its half. Values are
    /// mapped to integers with the same order (IEEE total order) so comparisons are plain.
    fn order_statistics(&mut self, x: &[f64]) -> (f64, f64) {
        let n = x.len();
        let keys = &mut self.keys;
        keys.clear();
        keys.extend(x.iter().map(|v| order_key(*v)));
        let half = n / 2;
        let (lower, mid, upper) = keys.select_nth_unstable(half);
        let mid = *mid;
        // Order statistic `k` (0-based) of the whole array, given the partition around `half`.
        let quantile = |q: f64, lower: &mut [i64], upper: &mut [i64]| -> f64 {
            let pos = q * (n - 1) as f64;
            let k = pos.floor() as usize;
            let t = pos - k as f64;
            let nth = |k: usize, lower: &mut [i64], upper: &mut [i64]| -> i64 {
                match k.cmp(&half) {
                    std::cmp::Ordering::Less => *lower.select_nth_unstable(k).1,
                    std::cmp::Ordering::Equal => mid,
                    std::cmp::Ordering::Greater => *upper.select_nth_unstable(k - half - 1).1,
                }
            };
            let lo = from_order_key(nth(k, lower, upper));
            if k + 1 >= n || t == 0.0 {
                return lo;
            }
            let hi = from_order_key(nth(k + 1, lower, upper));
            lerp(lo, hi, t)
        };
        let q25 = quantile(0.25, lower, upper);
        let q75 = quantile(0.75, lower, upper);
        // np.median: middle element, or the mean of the two middle ones.
        let median = if n % 2 == 1 {
            from_order_key(mid)
        } else {
            let below = lower.iter().copied().max().unwrap_or(mid);
            (from_order_key(below) + from_order_key(mid)) / 2.0
        };
        (median, q75 - q25)
    }

    /// `scipy.signal.welch(x, fs)[1]` into `self.psd`.
    fn welch_psd(&mut self, x: &[f64], fs: f64) {
        let n = x.len();
        let nperseg = n.min(256);
        let stale = self
            .welch
            .as_ref()
            .is_none_or(|w| w.nperseg != nperseg || w.fs != fs);
        if stale {
            self.welch = Some(WelchPlan::new(nperseg, fs));
        }
        let Some(plan) = &self.welch else {
            unreachable!("planned above")
        };
        let step = nperseg - nperseg / 2;
        let segments = (n - nperseg) / step + 1;
        let nfreq = nperseg / 2 + 1;
        self.psd.clear();
        self.psd.resize(nfreq, 0.0);
        self.spec.resize(nfreq, Complex::new(0.0, 0.0));
        let need = plan.fft.get_scratch_len();
        self.fft_scratch.resize(need, Complex::new(0.0, 0.0));
        for s in 0..segments {
            let seg = &x[s * step..s * step + nperseg];
            let m = pairwise_sum(seg) / seg.len() as f64;
            self.seg.clear();
            self.seg
                .extend(seg.iter().zip(&plan.window).map(|(v, w)| (v - m) * w));
            // The input length always equals the plan length, so this cannot fail.
            let _ =
                plan.fft
                    .process_with_scratch(&mut self.seg, &mut self.spec, &mut self.fft_scratch);
            for (p, c) in self.psd.iter_mut().zip(&self.spec) {
                *p += c.norm_sqr();
            }
        }
        let even = nperseg.is_multiple_of(2);
        for (k, p) in self.psd.iter_mut().enumerate() {
            let double = if k == 0 || (even && k == nfreq - 1) {
                1.0
            } else {
                2.0
            };
            *p = *p * plan.scale * double / segments as f64;
        }
    }
}

/// Index and value of the first maximum (`np.argmax`).
fn first_max(v: &[f64]) -> (usize, f64) {
    let (mut arg, mut peak) = (0, f64::NEG_INFINITY);
    for (k, &p) in v.iter().enumerate() {
        if p > peak {
            peak = p;
            arg = k;
        }
    }
    (arg, peak)
}

/// Maps an f64 to an i64 with the same (IEEE total) order.
fn order_key(v: f64) -> i64 {
    let b = v.to_bits() as i64;
    b ^ ((((b >> 63) as u64) >> 1) as i64)
}

fn from_order_key(k: i64) -> f64 {
    f64::from_bits((k ^ ((((k >> 63) as u64) >> 1) as i64)) as u64)
}

/// `len(scipy.signal.find_peaks(x)[0])`: strict local maxima, a flat top counting once when it
/// falls on both sides.
fn count_local_maxima(x: &[f64]) -> usize {
    let n = x.len();
    if n < 3 {
        return 0;
    }
    // Without equal neighbours there are no plateaus: a peak is simply higher than both
    // neighbours, which counts without branches.
    if !x.windows(2).any(|w| w[0] == w[1]) {
        return x
            .windows(3)
            .map(|w| (w[0] < w[1] && w[1] > w[2]) as usize)
            .sum();
    }
    let i_max = n - 1;
    let (mut i, mut count) = (1, 0);
    while i < i_max {
        if x[i - 1] < x[i] {
            let mut ahead = i + 1;
            while ahead < i_max && x[ahead] == x[i] {
                ahead += 1;
            }
            if x[ahead] < x[i] {
                count += 1;
                i = ahead;
            }
        }
        i += 1;
    }
    count
}

/// Rise and fall time of the demeaned absolute amplitude around its peak, at 10 % of the peak.
fn rise_fall_times(x: &[f64], mean: f64, fs: f64) -> (f64, f64) {
    let (mut p, mut peak) = (0, f64::NEG_INFINITY);
    for (i, v) in x.iter().enumerate() {
        let a = (v - mean).abs();
        if a > peak {
            peak = a;
            p = i;
        }
    }
    let thr = 0.1 * peak;
    let first = x.iter().position(|v| (v - mean).abs() >= thr).unwrap_or(p);
    let last = x.iter().rposition(|v| (v - mean).abs() >= thr).unwrap_or(p);
    ((p - first) as f64 / fs, (last - p) as f64 / fs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_each_set() {
        let study = FeatureSet::Study.column_names();
        assert_eq!(study.len(), 69);
        assert_eq!(study[0], "f1_c0_maximum_amplitude");
        assert_eq!(study[3], "f4_c0_std_dev_amplitude");
        assert_eq!(study[23], "f1_c1_maximum_amplitude");
        assert_eq!(study[68], "f23_c2_peak_to_peak_amplitude");
        let physical = FeatureSet::Physical.column_names();
        assert_eq!(physical[3], "f4_c0_standard_deviation");
        assert_eq!(column_names(), study);
        assert_eq!(
            FeatureSet::owning("f6_c1_signal_range"),
            Some(FeatureSet::Study)
        );
        assert_eq!(
            FeatureSet::owning("f6_c1_amplitude_range"),
            Some(FeatureSet::Physical)
        );
        assert_eq!("physical".parse(), Ok(FeatureSet::Physical));
        assert!("seed".parse::<FeatureSet>().is_err());
    }

    #[test]
    fn simple_statistics() {
        let x = [1.0, 3.0, 2.0, 5.0, 4.0, 0.0, -1.0, 2.0];
        let f = FeatureExtractor::new(FeatureSet::Physical, 100.0).channel_features(&x);
        assert_eq!(f[0], 5.0);
        assert_eq!(f[1], -1.0);
        assert_eq!(f[2], 2.0);
        assert_eq!(f[4], 2.0); // median of sorted [-1,0,1,2,2,3,4,5]
        assert_eq!(f[6], 60.0);
        assert_eq!(f[14], 3.0); // np.sign changes at 4→0, 0→-1, -1→2
        assert_eq!(f[15], 2.0); // peaks at 3 and 5
        assert_eq!(f[22], 6.0);
        // percentile 25: pos 1.75 → 0 + 0.75·1; 75: pos 5.25 → 3 + 0.25·1
        assert!((f[19] - (3.25 - 0.75)).abs() < 1e-15);
        let s = FeatureExtractor::new(FeatureSet::Study, 100.0).channel_features(&x);
        // signbit changes only at 0 → -1 and -1 → 2 (+0.0 is not negative).
        assert_eq!(s[14], 2.0);
        assert_eq!((s[20], s[21]), (3.0, 5.0)); // first maximum at index 3 of 8
    }

    #[test]
    fn plateaus_and_degenerate_input() {
        assert_eq!(count_local_maxima(&[0.0, 1.0, 1.0, 1.0, 0.0, 2.0, 2.0]), 1);
        assert_eq!(count_local_maxima(&[0.0, 1.0, 0.5, 3.0, -1.0, 2.0]), 2);
        assert_eq!(count_local_maxima(&[0.0, 1.0, 1.0, 0.5, 3.0, -1.0, 2.0]), 2);
        for set in FeatureSet::ALL {
            let f = FeatureExtractor::new(set, 100.0).channel_features(&[7.0; 300]);
            assert!(
                f[16].is_nan() && f[17].is_nan(),
                "constant signal has no kurtosis/skew"
            );
            assert_eq!(f[3], 0.0);
            assert!(FeatureExtractor::new(set, 100.0)
                .channel_features(&[])
                .iter()
                .all(|v| v.is_nan()));
        }
    }
}
