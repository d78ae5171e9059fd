//! Taper windows with scipy's definitions (`scipy.signal.windows`), so spectra match it bit for bit
//! up to rounding.

use std::f64::consts::PI;

/// `scipy.signal.windows.tukey(n, alpha, sym)`.
pub fn tukey(n: usize, alpha: f64, sym: bool) -> Vec<f64> {
    if n <= 1 {
        return vec![1.0; n];
    }
    if alpha <= 0.0 {
        return vec![1.0; n];
    }
    // A periodic window is the symmetric one of length n + 1 without its last point.
    let m = if sym { n } else { n + 1 };
    let mut w = vec![1.0; m];
    let width = (alpha * (m - 1) as f64 / 2.0).floor() as usize;
    let denom = alpha * (m - 1) as f64;
    for (i, v) in w.iter_mut().enumerate().take(width + 1) {
        *v = 0.5 * (1.0 + (PI * (-1.0 + 2.0 * i as f64 / denom)).cos());
    }
    for (i, v) in w.iter_mut().enumerate().skip(m - width - 1) {
        *v = 0.5 * (1.0 + (PI * (-2.0 / alpha + 1.0 + 2.0 * i as f64 / denom)).cos());
    }
    w.truncate(n);
    w
}

/// `scipy.signal.windows.hann(n, sym=False)`, the periodic Hann window `welch` uses.
pub fn hann_periodic(n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| 0.5 - 0.5 * (2.0 * PI * i as f64 / n as f64).cos())
        .collect()
}

/// `scipy.signal.windows.kaiser(n, beta, sym=True)`, used by `resample_poly`'s FIR design.
pub fn kaiser_symmetric(n: usize, beta: f64) -> Vec<f64> {
    if n == 1 {
        return vec![1.0];
    }
    let alpha = (n - 1) as f64 / 2.0;
    let i0_beta = bessel_i0(beta);
    (0..n)
        .map(|i| {
            let r = (i as f64 - alpha) / alpha;
            bessel_i0(beta * (1.0 - r * r).max(0.0).sqrt()) / i0_beta
        })
        .collect()
}

/// Modified Bessel function of the first kind, order 0, by its power series
/// (converges to full double precision for the small arguments windows use).
pub fn bessel_i0(x: f64) -> f64 {
    let q = x * x / 4.0;
    let mut term = 1.0;
    let mut sum = 1.0;
    for k in 1..500 {
        term *= q / (k as f64 * k as f64);
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tukey_has_flat_top_and_tapers() {
        let w = tukey(64, 0.25, false);
        assert_eq!(w.len(), 64);
        assert_eq!(w[0], 0.0);
        assert!((w[32] - 1.0).abs() < 1e-15);
        // Periodic: the taper is mirror-symmetric about n/2 on the periodic grid.
        for i in 1..32 {
            assert!((w[i] - w[64 - i]).abs() < 1e-12, "i={i}");
        }
    }

    #[test]
    fn hann_and_kaiser_basics() {
        let h = hann_periodic(4);
        assert!((h[0]).abs() < 1e-15 && (h[2] - 1.0).abs() < 1e-15);
        let k = kaiser_symmetric(11, 5.0);
        assert!((k[5] - 1.0).abs() < 1e-15);
        assert!((k[0] - k[10]).abs() < 1e-15);
        assert!((bessel_i0(0.0) - 1.0).abs() < 1e-15);
        // I0(1) = 1.2660658777520082
        assert!((bessel_i0(1.0) - 1.266_065_877_752_008_2).abs() < 1e-15);
    }
}
