//! Causal Butterworth bandpass as second-order sections, with ObsPy's
//! `Trace.filter("bandpass", freqmin, freqmax, corners, zerophase=False)` semantics: the design
//! of `scipy.signal.iirfilter(corners, [lo, hi], btype="band", ftype="butter", output="zpk")`
//! (bilinear transform with pre-warping), the sections of `zpk2sos` (pole pairs closest to the unit
//! circle last, each with its nearest zeros, the gain in the first section) and the recursion of
//! `sosfilt` (direct form II transposed, starting from rest).
//!
//! The state lives in [`SosFilter`], so a stream filtered chunk by chunk equals the whole stream
//! filtered at once, sample for sample.

use std::fmt;
use std::str::FromStr;

use rustfft::num_complex::Complex64;
use serde::{Deserialize, Serialize};

use crate::TARGET_RATE_HZ;

/// Corner frequencies and order of a Butterworth bandpass on the 100 Hz grid (ObsPy's
/// `corners`: the lowpass prototype's order, so the bandpass has `2 × corners` poles). Built only
/// through [`Bandpass::new`], so every value designs.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "BandpassSpec", into = "BandpassSpec")]
pub struct Bandpass {
    freqmin: f64,
    freqmax: f64,
    corners: usize,
}

/// The unchecked form of a [`Bandpass`], as it is written in configuration.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct BandpassSpec {
    freqmin: f64,
    freqmax: f64,
    corners: usize,
}

impl TryFrom<BandpassSpec> for Bandpass {
    type Error = FilterError;
    fn try_from(s: BandpassSpec) -> Result<Self, FilterError> {
        Bandpass::new(s.freqmin, s.freqmax, s.corners)
    }
}

impl From<Bandpass> for BandpassSpec {
    fn from(b: Bandpass) -> Self {
        Self {
            freqmin: b.freqmin,
            freqmax: b.freqmax,
            corners: b.corners,
        }
    }
}

/// Why a bandpass cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FilterError {
    #[error(
        "bandpass corners must satisfy 0 < freqmin < freqmax (got {freqmin} and {freqmax} Hz)"
    )]
    Corners { freqmin: f64, freqmax: f64 },
    #[error("bandpass freqmax {freqmax} Hz is not below the Nyquist frequency {nyquist} Hz")]
    AboveNyquist { freqmax: f64, nyquist: f64 },
    #[error("bandpass order must be 1 to 10 corners (got {0})")]
    Order(usize),
    #[error(
        "cannot parse trigger filter {0:?}: expected `none` or `bandpass:FMIN,FMAX[,CORNERS]`"
    )]
    Syntax(String),
}

impl Bandpass {
    /// A bandpass for streams on the 100 Hz grid.
    pub fn new(freqmin: f64, freqmax: f64, corners: usize) -> Result<Self, FilterError> {
        design_sections(freqmin, freqmax, corners, TARGET_RATE_HZ)?;
        Ok(Self {
            freqmin,
            freqmax,
            corners,
        })
    }

    pub fn freqmin(&self) -> f64 {
        self.freqmin
    }

    pub fn freqmax(&self) -> f64 {
        self.freqmax
    }

    pub fn corners(&self) -> usize {
        self.corners
    }

    /// A filter at rest for a stream on the 100 Hz grid.
    pub fn filter(&self) -> SosFilter {
        SosFilter::new(self.sections())
    }

    /// The second-order sections for the 100 Hz grid.
    pub fn sections(&self) -> Vec<Section> {
        design_sections(self.freqmin, self.freqmax, self.corners, TARGET_RATE_HZ)
            .unwrap_or_default() // checked in `new`
    }
}

/// The second-order sections of a bandpass at `rate` Hz.
pub fn design_sections(
    freqmin: f64,
    freqmax: f64,
    corners: usize,
    rate: f64,
) -> Result<Vec<Section>, FilterError> {
    if !(freqmin > 0.0 && freqmax > freqmin) {
        return Err(FilterError::Corners { freqmin, freqmax });
    }
    let nyquist = 0.5 * rate;
    // ObsPy falls back to a highpass there; a trigger filter that silently changes kind would
    // hide a misconfiguration, so it is refused instead.
    if freqmax / nyquist - 1.0 > -1e-6 {
        return Err(FilterError::AboveNyquist { freqmax, nyquist });
    }
    if !(1..=10).contains(&corners) {
        return Err(FilterError::Order(corners));
    }
    Ok(design(corners, freqmin / nyquist, freqmax / nyquist))
}

impl fmt::Display for Bandpass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bandpass:{},{},{}",
            self.freqmin, self.freqmax, self.corners
        )
    }
}

/// One biquad, `b0 + b1 z⁻¹ + b2 z⁻²` over `1 + a1 z⁻¹ + a2 z⁻²` (scipy's sos row with a0 = 1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Section {
    pub b: [f64; 3],
    pub a: [f64; 2],
}

impl Section {
    /// One sample through this section in direct form II transposed (scipy's `sosfilt`), with
    /// its two delays in `z`.
    #[inline(always)]
    pub(crate) fn step(&self, z: &mut [f64; 2], x: f64) -> f64 {
        let out = self.b[0] * x + z[0];
        z[0] = self.b[1] * x - self.a[0] * out + z[1];
        z[1] = self.b[2] * x - self.a[1] * out;
        out
    }
}

/// A cascade of sections with its state: feed it consecutive pieces of one stream.
#[derive(Clone, Debug)]
pub struct SosFilter {
    sections: Vec<Section>,
    state: Vec<[f64; 2]>,
}

impl SosFilter {
    pub fn new(sections: Vec<Section>) -> Self {
        let state = vec![[0.0; 2]; sections.len()];
        Self { sections, state }
    }

    /// A cascade whose sections start from `state` (one pair of delays each), as a stream
    /// that has been running before.
    pub(crate) fn with_state(sections: Vec<Section>, state: Vec<[f64; 2]>) -> Self {
        debug_assert_eq!(sections.len(), state.len());
        Self { sections, state }
    }

    /// Filters `x` in place, continuing from the state the previous call left.
    pub fn process(&mut self, x: &mut [f64]) {
        for v in x.iter_mut() {
            let mut cur = *v;
            for (s, z) in self.sections.iter().zip(self.state.iter_mut()) {
                cur = s.step(z, cur);
            }
            *v = cur;
        }
    }

    /// Back to rest, as a new stream.
    pub fn reset(&mut self) {
        self.state.iter_mut().for_each(|z| *z = [0.0; 2]);
    }
}

/// The analog Butterworth lowpass prototype (scipy's `buttap`): poles on the left unit half
/// circle, no zeros, gain 1.
pub(crate) fn butterworth_prototype(order: usize) -> Vec<Complex64> {
    let n = order as f64;
    (0..order)
        .map(|i| {
            let m = -n + 1.0 + 2.0 * i as f64;
            -Complex64::from_polar(1.0, std::f64::consts::PI * m / (2.0 * n))
        })
        .collect()
}

/// Zeros, poles and gain of the digital bandpass between `lo` and `hi` (fractions of Nyquist).
fn design(order: usize, lo: f64, hi: f64) -> Vec<Section> {
    let prototype = butterworth_prototype(order);
    // Pre-warped corners (scipy's fs = 2 for normalised frequencies).
    let fs = 2.0;
    let warp = |w: f64| 2.0 * fs * (std::f64::consts::PI * w / fs).tan();
    let (w1, w2) = (warp(lo), warp(hi));
    let (bw, wo) = (w2 - w1, (w1 * w2).sqrt());
    // Lowpass → bandpass: each pole splits in two; `order` zeros appear at s = 0.
    let mut poles = Vec::with_capacity(2 * order);
    for root in [1.0, -1.0] {
        for p in &prototype {
            let p = p * (bw / 2.0);
            poles.push(p + root * (p * p - wo * wo).sqrt());
        }
    }
    let gain = bw.powi(order as i32);
    // Bilinear transform: s = 0 maps to z = 1, infinity (the other `order` zeros) to z = -1.
    let fs2 = 2.0 * fs;
    let digital: Vec<Complex64> = poles.iter().map(|p| (fs2 + p) / (fs2 - p)).collect();
    let denom = poles
        .iter()
        .fold(Complex64::new(1.0, 0.0), |acc, p| acc * (fs2 - p));
    // The zeros at s = 0 contribute fs2 each to the numerator product.
    let gain = gain * (Complex64::new(fs2.powi(order as i32), 0.0) / denom).re;
    let zeros: Vec<f64> = std::iter::repeat_n(1.0, order)
        .chain(std::iter::repeat_n(-1.0, order))
        .collect();
    pair_sections(digital, zeros, gain)
}

/// scipy's `zpk2sos(..., pairing="nearest")` for real zeros: the pole (pair) closest to the unit
/// circle is taken first with its two nearest zeros; sections are then reversed so those end last,
/// and the gain goes into the first.
pub(crate) fn pair_sections(poles: Vec<Complex64>, mut zeros: Vec<f64>, gain: f64) -> Vec<Section> {
    // One pole of each conjugate pair (positive imaginary part), then the real ones.
    let tol = 100.0 * f64::EPSILON;
    let mut complex: Vec<Complex64> = poles
        .iter()
        .filter(|p| p.im > tol * p.norm())
        .cloned()
        .collect();
    complex.sort_by(|a, b| a.re.total_cmp(&b.re));
    let mut real: Vec<Complex64> = poles
        .iter()
        .filter(|p| p.im.abs() <= tol * p.norm())
        .map(|p| Complex64::new(p.re, 0.0))
        .collect();
    real.sort_by(|a, b| a.re.total_cmp(&b.re));
    let mut remaining: Vec<Complex64> = complex.into_iter().chain(real).collect();

    let mut sections = Vec::new();
    while !remaining.is_empty() {
        let worst = (0..remaining.len())
            .min_by(|&i, &j| {
                let d = |p: Complex64| (1.0 - p.norm()).abs();
                d(remaining[i]).total_cmp(&d(remaining[j]))
            })
            .expect("not empty");
        let p1 = remaining.remove(worst);
        let (p_sum, p_prod) = if p1.im != 0.0 {
            (2.0 * p1.re, p1.norm_sqr())
        } else {
            // A real pole pairs with the real pole nearest to it, if one is left.
            let other = (0..remaining.len())
                .filter(|&i| remaining[i].im == 0.0)
                .min_by(|&i, &j| {
                    (remaining[i] - p1)
                        .norm()
                        .total_cmp(&(remaining[j] - p1).norm())
                });
            match other {
                Some(i) => {
                    let p2 = remaining.remove(i).re;
                    (p1.re + p2, p1.re * p2)
                }
                None => (p1.re, 0.0),
            }
        };
        let mut take_nearest = || -> Option<f64> {
            let i = (0..zeros.len())
                .min_by(|&i, &j| (p1 - zeros[i]).norm().total_cmp(&(p1 - zeros[j]).norm()))?;
            Some(zeros.remove(i))
        };
        let (z_sum, z_prod) = match (take_nearest(), take_nearest()) {
            (Some(z1), Some(z2)) => (z1 + z2, z1 * z2),
            (Some(z1), None) => (z1, 0.0),
            _ => (0.0, 0.0),
        };
        sections.push(Section {
            b: [1.0, -z_sum, z_prod],
            a: [-p_sum, p_prod],
        });
    }
    sections.reverse();
    if let Some(first) = sections.first_mut() {
        first.b = first.b.map(|v| v * gain);
    }
    sections
}

/// What the trigger sees: the raw modulus, or the modulus of bandpassed components.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum TriggerFilter {
    None,
    Bandpass(Bandpass),
}

impl TriggerFilter {
    /// The documented default: 1–10 Hz, 4 corners. It keeps local P energy and removes the
    /// microseisms and long-period noise that otherwise dominate the LTA of a broadband station.
    pub const DEFAULT: Bandpass = Bandpass {
        freqmin: 1.0,
        freqmax: 10.0,
        corners: 4,
    };

    pub fn bandpass(&self) -> Option<Bandpass> {
        match self {
            Self::None => None,
            Self::Bandpass(b) => Some(*b),
        }
    }
}

impl Default for TriggerFilter {
    fn default() -> Self {
        Self::Bandpass(Self::DEFAULT)
    }
}

impl FromStr for TriggerFilter {
    type Err = FilterError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || FilterError::Syntax(s.to_string());
        if s == "none" {
            return Ok(Self::None);
        }
        let spec = s.strip_prefix("bandpass:").ok_or_else(syntax)?;
        let parts: Vec<&str> = spec.split(',').map(str::trim).collect();
        let num = |i: usize| -> Result<f64, FilterError> {
            parts[i].parse::<f64>().map_err(|_| syntax())
        };
        let band = match parts.len() {
            2 | 3 => Bandpass::new(
                num(0)?,
                num(1)?,
                match parts.get(2) {
                    Some(c) => c.parse().map_err(|_| syntax())?,
                    None => Self::DEFAULT.corners,
                },
            )?,
            _ => return Err(syntax()),
        };
        Ok(Self::Bandpass(band))
    }
}

impl fmt::Display for TriggerFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.bandpass() {
            None => f.write_str("none"),
            Some(b) => b.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn band() -> Bandpass {
        TriggerFilter::DEFAULT
    }

    #[test]
    fn chunked_filtering_equals_one_pass() {
        let x: Vec<f64> = (0..5000)
            .map(|i| (i as f64 * 0.37).sin() + ((i * 7919) % 17) as f64)
            .collect();
        let mut whole = x.clone();
        band().filter().process(&mut whole);
        let mut f = band().filter();
        let mut pieces = x.clone();
        for chunk in pieces.chunks_mut(137) {
            f.process(chunk);
        }
        assert_eq!(whole, pieces);
        f.reset();
        let mut again = x.clone();
        f.process(&mut again);
        assert_eq!(whole, again);
        // Three at once: bit for bit the same.
        let (mut p, mut q, mut r): (Vec<f64>, Vec<f64>, Vec<f64>) =
            (x.clone(), x.iter().map(|v| -2.0 * v).collect(), x);
        let mut q_alone: Vec<f64> = q.clone();
        band().filter().process(&mut q_alone);
        let mut three = crate::picker::ThreeChannelFilter::new(band().sections());
        for i in 0..p.len() {
            [p[i], q[i], r[i]] = three.step([p[i], q[i], r[i]]);
        }
        assert_eq!((p, q, r), (whole.clone(), q_alone, whole));
    }

    #[test]
    fn passes_the_band_and_stops_outside_it() {
        let gain_at = |hz: f64| {
            let mut x: Vec<f64> = (0..20_000)
                .map(|i| (2.0 * std::f64::consts::PI * hz * i as f64 / 100.0).sin())
                .collect();
            band().filter().process(&mut x);
            // Amplitude from the RMS of whole periods (sample peaks miss the crest at 10 Hz).
            let tail = &x[10_000..];
            (2.0 * tail.iter().map(|v| v * v).sum::<f64>() / tail.len() as f64).sqrt()
        };
        assert!((gain_at(3.0) - 1.0).abs() < 0.01, "{}", gain_at(3.0));
        // Four corners: 80 dB per decade below 1 Hz.
        assert!(gain_at(0.2) < 2e-3, "{}", gain_at(0.2));
        assert!(gain_at(0.1) < 2e-4, "{}", gain_at(0.1));
        assert!(gain_at(40.0) < 1e-3, "{}", gain_at(40.0));
        // -3 dB at the corners.
        for corner in [1.0, 10.0] {
            let gain = gain_at(corner);
            assert!((gain - 0.5f64.sqrt()).abs() < 0.01, "{corner} Hz: {gain}");
        }
    }

    #[test]
    fn odd_orders_pair_their_real_poles() {
        for corners in 1..=5 {
            let sections = design_sections(2.0, 8.0, corners, 100.0).unwrap();
            assert_eq!(sections.len(), corners);
            let mut x: Vec<f64> = (0..4000)
                .map(|i| (2.0 * std::f64::consts::PI * 4.0 * i as f64 / 100.0).sin())
                .collect();
            SosFilter::new(sections).process(&mut x);
            let peak = x[2000..].iter().fold(0.0f64, |m, v| m.max(v.abs()));
            assert!((peak - 1.0).abs() < 0.02, "{corners}: {peak}");
        }
    }

    #[test]
    fn bad_settings_are_refused_with_the_reason() {
        assert!(matches!(
            Bandpass::new(1.0, 50.0, 4),
            Err(FilterError::AboveNyquist { .. })
        ));
        assert!(design_sections(1.0, 50.0, 4, 125.0).is_ok());
        assert!(matches!(
            Bandpass::new(5.0, 2.0, 4),
            Err(FilterError::Corners { .. })
        ));
        assert!(matches!(
            Bandpass::new(f64::NAN, 2.0, 4),
            Err(FilterError::Corners { .. })
        ));
        assert_eq!(Bandpass::new(1.0, 2.0, 0), Err(FilterError::Order(0)));
        assert!("bandpass:1,60".parse::<TriggerFilter>().is_err());
        // Configuration goes through the same checks.
        let json = r#"{"freqmin": 3.0, "freqmax": 1.0, "corners": 4}"#;
        assert!(serde_json::from_str::<Bandpass>(json).is_err());
        let json = r#"{"freqmin": 1.0, "freqmax": 3.0, "corners": 4}"#;
        assert_eq!(
            serde_json::from_str::<Bandpass>(json).unwrap(),
            Bandpass::new(1.0, 3.0, 4).unwrap()
        );
    }

    #[test]
    fn parses_and_prints_the_option() {
        assert_eq!("none".parse(), Ok(TriggerFilter::None));
        assert_eq!(
            "bandpass:2,15".parse(),
            Ok(TriggerFilter::Bandpass(
                Bandpass::new(2.0, 15.0, 4).unwrap()
            ))
        );
        let three: TriggerFilter = "bandpass:0.5, 8 ,2".parse().unwrap();
        assert_eq!(three.to_string(), "bandpass:0.5,8,2");
        assert_eq!(TriggerFilter::default().to_string(), "bandpass:1,10,4");
        for bad in [
            "lowpass:3",
            "bandpass:1",
            "bandpass:a,b",
            "bandpass:1,2,3,4",
            "",
        ] {
            assert!(bad.parse::<TriggerFilter>().is_err(), "{bad}");
        }
    }
}
