//! Rational-factor resampling with an anti-alias FIR filter, equal to
//! `scipy.signal.resample_poly(x, up, down)` with its default Kaiser(β = 5) design and zero
//! padding at the edges.

use crate::windows_fn::kaiser_symmetric;

/// Largest denominator tried when turning a rate ratio into `up/down`.
const MAX_DENOMINATOR: usize = 10_000;

/// `up/down` with `from_rate · up / down == to_rate`, reduced; `None` when no such small
/// fraction exists (e.g. a drifting 99.9731 Hz digitizer).
pub fn rational_ratio(from_rate: f64, to_rate: f64) -> Option<(usize, usize)> {
    if !(from_rate > 0.0 && to_rate > 0.0 && from_rate.is_finite() && to_rate.is_finite()) {
        return None;
    }
    let scale = to_rate / from_rate;
    for down in 1..=MAX_DENOMINATOR {
        let up = scale * down as f64;
        let rounded = up.round();
        if rounded >= 1.0 && (up - rounded).abs() <= 1e-9 * up {
            let (up, down) = (rounded as usize, down);
            let g = gcd(up, down);
            return Some((up / g, down / g));
        }
    }
    None
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The low-pass filter `resample_poly` designs: `firwin(2·10·max(up,down)+1, 1/max(up,down),
/// window=('kaiser', 5.0)) · up`.
fn design_filter(up: usize, down: usize) -> Vec<f64> {
    let max_rate = up.max(down);
    let cutoff = 1.0 / max_rate as f64;
    let half_len = 10 * max_rate;
    let taps = 2 * half_len + 1;
    let window = kaiser_symmetric(taps, 5.0);
    let centre = half_len as f64;
    let mut h: Vec<f64> = (0..taps)
        .map(|i| {
            let m = i as f64 - centre;
            cutoff * sinc(cutoff * m) * window[i]
        })
        .collect();
    // firwin scales the pass band to unity gain at DC.
    let sum: f64 = h.iter().sum();
    for v in &mut h {
        *v = *v / sum * up as f64;
    }
    h
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let px = std::f64::consts::PI * x;
        px.sin() / px
    }
}

/// Resamples `x` by `up/down` exactly as `scipy.signal.resample_poly(x, up, down)` does.
pub fn resample_poly(x: &[f64], up: usize, down: usize) -> Vec<f64> {
    let g = gcd(up, down).max(1);
    let (up, down) = (up / g, down / g);
    if up == down || x.is_empty() {
        return x.to_vec();
    }
    let n_in = x.len();
    let n_out = (n_in * up).div_ceil(down);
    let h = design_filter(up, down);
    let half_len = (h.len() - 1) / 2;
    // Zero-pad the filter in front so output samples land on the filter centre.
    let n_pre_pad = down - half_len % down;
    let n_pre_remove = (half_len + n_pre_pad) / down;
    let mut padded = vec![0.0; n_pre_pad];
    padded.extend_from_slice(&h);
    // upfirdn: y[k] = Σ_j h[j] · xu[k·down − j], with xu the zero-stuffed input.
    let upsampled_len = (n_in - 1) * up + 1;
    (n_pre_remove..n_pre_remove + n_out)
        .map(|k| {
            let m = k * down;
            let mut acc = 0.0;
            // j ≡ m (mod up) so that m − j hits a real (not stuffed) sample.
            let mut j = m % up;
            while j < padded.len() && j <= m {
                let pos = m - j;
                if pos < upsampled_len {
                    acc += padded[j] * x[pos / up];
                }
                j += up;
            }
            acc
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_rational_ratios() {
        assert_eq!(rational_ratio(125.0, 100.0), Some((4, 5)));
        assert_eq!(rational_ratio(200.0, 100.0), Some((1, 2)));
        assert_eq!(rational_ratio(40.0, 100.0), Some((5, 2)));
        assert_eq!(rational_ratio(100.0, 100.0), Some((1, 1)));
        assert_eq!(rational_ratio(0.0, 100.0), None);
        assert_eq!(rational_ratio(99.973_117_3, 100.0), None);
    }

    #[test]
    fn keeps_dc_and_length() {
        let x = vec![3.0; 1000];
        let y = resample_poly(&x, 4, 5);
        assert_eq!(y.len(), 800);
        // Away from the zero-padded edges a constant stays constant (to the filter's ripple).
        for v in &y[100..700] {
            assert!((v - 3.0).abs() < 1e-2, "{v}");
        }
        assert_eq!(resample_poly(&x, 2, 2), x);
    }
}
