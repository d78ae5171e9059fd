//! A trace split into frequency bands that add up to it: each band keeps its own Fourier
//! coefficients and none of the others'. Band-stop masking then removes a band exactly, and any
//! set of kept bands is the sum of their parts, which is what a Shapley game over bands needs.

use realfft::num_complex::Complex;
use realfft::RealFftPlanner;

/// Bands `[0, c₁), [c₁, c₂), …, [cₖ, Nyquist]` from the cut frequencies `c₁ < … < cₖ` in Hz.
#[derive(Clone, Debug, PartialEq)]
pub struct Bands {
    cuts_hz: Vec<f64>,
}

impl Bands {
    /// Cuts strictly between 0 and the Nyquist frequency of `rate_hz`, ascending.
    pub fn new(cuts_hz: Vec<f64>, rate_hz: f64) -> Result<Self, String> {
        let nyquist = rate_hz / 2.0;
        if let Some(c) = cuts_hz
            .iter()
            .find(|&&c| !(c.is_finite() && c > 0.0 && c < nyquist))
        {
            return Err(format!(
                "band cut {c} Hz: cuts must lie between 0 and the Nyquist frequency ({nyquist} Hz)"
            ));
        }
        if cuts_hz.windows(2).any(|w| w[0] >= w[1]) {
            return Err(format!(
                "band cuts {cuts_hz:?} Hz must be strictly ascending"
            ));
        }
        Ok(Self { cuts_hz })
    }

    pub fn len(&self) -> usize {
        self.cuts_hz.len() + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// Band `b`'s lower and upper edge in Hz (the last ends at the Nyquist frequency).
    pub fn edges(&self, b: usize, rate_hz: f64) -> (f64, f64) {
        let low = if b == 0 { 0.0 } else { self.cuts_hz[b - 1] };
        let high = self.cuts_hz.get(b).copied().unwrap_or(rate_hz / 2.0);
        (low, high)
    }

    /// The band a frequency falls in (a cut belongs to the band above it).
    fn band_of(&self, f: f64) -> usize {
        self.cuts_hz.partition_point(|&c| c <= f)
    }

    /// `x` (`channels` traces of equal length back to back) as one part per band, each the
    /// same shape as `x`; the parts add up to `x` to rounding.
    pub fn split(&self, x: &[f32], channels: usize, rate_hz: f64) -> Result<Vec<Vec<f64>>, String> {
        let n = x.len() / channels.max(1);
        if channels == 0 || n == 0 || n * channels != x.len() {
            return Err(format!(
                "{} samples do not make {channels} traces of equal length",
                x.len()
            ));
        }
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            return Err(format!(
                "sample {} of channel {} is not finite",
                i % n,
                i / n
            ));
        }
        let mut planner = RealFftPlanner::<f64>::new();
        let (forward, inverse) = (planner.plan_fft_forward(n), planner.plan_fft_inverse(n));
        let mut parts = vec![vec![0.0; x.len()]; self.len()];
        let mut time = forward.make_input_vec();
        let mut spectrum = forward.make_output_vec();
        let mut band_spectrum = inverse.make_input_vec();
        let mut back = inverse.make_output_vec();
        let band: Vec<usize> = (0..spectrum.len())
            .map(|k| self.band_of(k as f64 * rate_hz / n as f64))
            .collect();
        for c in 0..channels {
            for (t, &v) in time.iter_mut().zip(&x[c * n..(c + 1) * n]) {
                *t = v as f64;
            }
            forward
                .process(&mut time, &mut spectrum)
                .map_err(|e| e.to_string())?;
            for (b, part) in parts.iter_mut().enumerate() {
                for (k, s) in band_spectrum.iter_mut().enumerate() {
                    *s = if band[k] == b {
                        spectrum[k]
                    } else {
                        Complex::new(0.0, 0.0)
                    };
                }
                // The inverse transform wants real DC and Nyquist terms; rounding may leave a
                // trace of an imaginary part there.
                band_spectrum[0].im = 0.0;
                if n.is_multiple_of(2) {
                    band_spectrum[n / 2].im = 0.0;
                }
                inverse
                    .process(&mut band_spectrum, &mut back)
                    .map_err(|e| e.to_string())?;
                for (p, &v) in part[c * n..(c + 1) * n].iter_mut().zip(&back) {
                    *p = v / n as f64;
                }
            }
        }
        Ok(parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(f: f64, rate: f64, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (2.0 * std::f64::consts::PI * f * i as f64 / rate).sin() as f32)
            .collect()
    }

    #[test]
    fn the_parts_add_up_to_the_trace_and_each_holds_its_band() {
        let (rate, n) = (100.0, 2500);
        let bands = Bands::new(vec![2.0, 10.0], rate).unwrap();
        assert_eq!(bands.len(), 3);
        assert_eq!(bands.edges(0, rate), (0.0, 2.0));
        assert_eq!(bands.edges(2, rate), (10.0, 50.0));
        // 1 Hz on the first channel, 5 and 20 Hz on the second (whole periods in 25 s).
        let mut x = sine(1.0, rate, n);
        x.extend(
            sine(5.0, rate, n)
                .iter()
                .zip(sine(20.0, rate, n))
                .map(|(a, b)| a + b),
        );
        let parts = bands.split(&x, 2, rate).unwrap();
        for (i, &v) in x.iter().enumerate() {
            let sum: f64 = parts.iter().map(|p| p[i]).sum();
            assert!((sum - v as f64).abs() < 1e-5, "sample {i}");
        }
        let energy = |p: &[f64]| p.iter().map(|v| v * v).sum::<f64>();
        let one = sine(1.0, rate, n);
        assert!(
            energy(&parts[0][..n])
                > 0.99 * energy(&one.iter().map(|&v| v as f64).collect::<Vec<_>>())
        );
        assert!(energy(&parts[1][..n]) < 1e-6 && energy(&parts[2][..n]) < 1e-6);
        let five: Vec<f64> = sine(5.0, rate, n).iter().map(|&v| v as f64).collect();
        for (a, b) in parts[1][n..].iter().zip(&five) {
            assert!((a - b).abs() < 1e-5);
        }
        assert!(energy(&parts[0][n..]) < 1e-6);
    }

    #[test]
    fn bad_cuts_and_bad_traces_are_refused() {
        assert!(Bands::new(vec![0.0], 100.0)
            .unwrap_err()
            .contains("between 0"));
        assert!(Bands::new(vec![60.0], 100.0)
            .unwrap_err()
            .contains("Nyquist"));
        assert!(Bands::new(vec![5.0, 2.0], 100.0)
            .unwrap_err()
            .contains("ascending"));
        let b = Bands::new(vec![5.0], 100.0).unwrap();
        assert!(b
            .split(&[0.0; 7], 2, 100.0)
            .unwrap_err()
            .contains("equal length"));
        let mut x = vec![0.0f32; 8];
        x[5] = f32::NAN;
        assert_eq!(
            b.split(&x, 2, 100.0).unwrap_err(),
            "sample 1 of channel 1 is not finite"
        );
    }
}
