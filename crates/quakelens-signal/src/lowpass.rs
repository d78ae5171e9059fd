//! The zero-phase Butterworth low-pass of the paper's experiment: scipy's
//! `sosfiltfilt(butter(order, cutoff, fs=rate, output="sos"), x)`, odd padding and steady-state
//! initial conditions included, so a filtered window equals scipy's.

use rustfft::num_complex::Complex64;

use crate::filter::{butterworth_prototype, pair_sections, Section, SosFilter};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LowpassError {
    #[error("low-pass cutoff must be above 0 and below the Nyquist frequency {nyquist} Hz (got {cutoff} Hz)")]
    Cutoff { cutoff: f64, nyquist: f64 },
    #[error("low-pass order must be 1 to 10 (got {0})")]
    Order(usize),
    #[error("{len} samples are too few for a zero-phase filter that pads {pad} on each side")]
    TooShort { len: usize, pad: usize },
}

/// A Butterworth low-pass run forward and backward (zero phase, squared magnitude response).
#[derive(Clone, Debug)]
pub struct Lowpass {
    pub cutoff_hz: f64,
    pub order: usize,
    sections: Vec<Section>,
    /// Steady-state initial conditions per section for a unit step (scipy's `sosfilt_zi`).
    zi: Vec<[f64; 2]>,
}

impl Lowpass {
    pub fn new(cutoff_hz: f64, order: usize, rate_hz: f64) -> Result<Self, LowpassError> {
        let nyquist = rate_hz / 2.0;
        if !(cutoff_hz > 0.0 && cutoff_hz < nyquist) {
            return Err(LowpassError::Cutoff {
                cutoff: cutoff_hz,
                nyquist,
            });
        }
        if !(1..=10).contains(&order) {
            return Err(LowpassError::Order(order));
        }
        let sections = design(order, cutoff_hz / nyquist);
        let zi = steady_state(&sections);
        Ok(Self {
            cutoff_hz,
            order,
            sections,
            zi,
        })
    }

    pub fn sections(&self) -> &[Section] {
        &self.sections
    }

    /// Samples of odd extension on each side (scipy's default `padlen`).
    pub fn pad(&self) -> usize {
        let last_zero =
            |f: fn(&Section) -> f64| self.sections.iter().filter(|s| f(s) == 0.0).count();
        let taps = 2 * self.sections.len() + 1 - last_zero(|s| s.b[2]).min(last_zero(|s| s.a[1]));
        3 * taps
    }

    /// `x` filtered forward and backward.
    pub fn filtfilt(&self, x: &[f64]) -> Result<Vec<f64>, LowpassError> {
        let pad = self.pad();
        let n = x.len();
        if n <= pad {
            return Err(LowpassError::TooShort { len: n, pad });
        }
        // Odd extension: the signal mirrored through its end points.
        let mut ext = Vec::with_capacity(n + 2 * pad);
        ext.extend((1..=pad).rev().map(|i| 2.0 * x[0] - x[i]));
        ext.extend_from_slice(x);
        ext.extend((1..=pad).map(|i| 2.0 * x[n - 1] - x[n - 1 - i]));
        let start = ext[0];
        self.run(&mut ext, start);
        ext.reverse();
        let start = ext[0];
        self.run(&mut ext, start);
        ext.reverse();
        Ok(ext[pad..pad + n].to_vec())
    }

    /// One causal pass from the steady state of a signal that was `start` forever.
    fn run(&self, x: &mut [f64], start: f64) {
        let state = self.zi.iter().map(|z| z.map(|v| v * start)).collect();
        SosFilter::with_state(self.sections.clone(), state).process(x);
    }
}

/// scipy's `butter(order, wn, output="sos")` for a low-pass at `wn` (fraction of Nyquist):
/// the prototype scaled to the pre-warped cutoff, then the bilinear transform (all zeros at
/// z = −1) and the same pairing as the trigger's bandpass.
fn design(order: usize, wn: f64) -> Vec<Section> {
    let fs = 2.0;
    let warped = 2.0 * fs * (std::f64::consts::PI * wn / fs).tan();
    let poles: Vec<Complex64> = butterworth_prototype(order)
        .into_iter()
        .map(|p| p * warped)
        .collect();
    let fs2 = 2.0 * fs;
    let digital = poles.iter().map(|p| (fs2 + p) / (fs2 - p)).collect();
    let denom = poles
        .iter()
        .fold(Complex64::new(1.0, 0.0), |acc, p| acc * (fs2 - p));
    let gain = warped.powi(order as i32) * (Complex64::new(1.0, 0.0) / denom).re;
    pair_sections(digital, vec![-1.0; order], gain)
}

/// scipy's `sosfilt_zi`: each section's `lfilter_zi`, scaled by the DC gain of those before it.
fn steady_state(sections: &[Section]) -> Vec<[f64; 2]> {
    let mut scale = 1.0;
    sections
        .iter()
        .map(|s| {
            let ([b0, b1, b2], [a1, a2]) = (s.b, s.a);
            let z0 = ((b1 - a1 * b0) + (b2 - a2 * b0)) / ((1.0 + a1) + a2);
            let z1 = (1.0 + a1) * z0 - (b1 - a1 * b0);
            let zi = [scale * z0, scale * z1];
            scale *= (b0 + b1 + b2) / (1.0 + a1 + a2);
            zi
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_constant_passes_unchanged_and_a_fast_sine_is_removed() {
        let f = Lowpass::new(5.0, 4, 100.0).unwrap();
        let flat = f.filtfilt(&[3.5; 500]).unwrap();
        assert!(
            flat.iter().all(|v| (v - 3.5).abs() < 1e-9),
            "{:?}",
            &flat[..4]
        );
        let fast: Vec<f64> = (0..2500)
            .map(|i| (2.0 * std::f64::consts::PI * 30.0 * i as f64 / 100.0).sin())
            .collect();
        let out = f.filtfilt(&fast).unwrap();
        let peak = out[200..2300].iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(peak < 1e-4, "{peak}");
    }

    #[test]
    fn bad_settings_and_short_inputs_are_errors() {
        assert!(matches!(
            Lowpass::new(50.0, 4, 100.0),
            Err(LowpassError::Cutoff { .. })
        ));
        assert!(Lowpass::new(0.0, 4, 100.0).is_err());
        assert_eq!(
            Lowpass::new(5.0, 0, 100.0).unwrap_err(),
            LowpassError::Order(0)
        );
        let f = Lowpass::new(5.0, 4, 100.0).unwrap();
        assert_eq!(f.pad(), 15);
        assert_eq!(Lowpass::new(5.0, 5, 100.0).unwrap().pad(), 18);
        assert_eq!(
            f.filtfilt(&[0.0; 15]).unwrap_err(),
            LowpassError::TooShort { len: 15, pad: 15 }
        );
    }
}
