//! numpy's pairwise summation, so sums (means, moments, spectral totals) agree with numpy to the
//! last bit on contiguous data, and a segment mean here equals `np.mean` of that segment.

/// numpy's pairwise summation (`pairwise_sum` in numpy's loops), bit for bit on contiguous data.
pub fn pairwise_sum(a: &[f64]) -> f64 {
    pairwise_sum_by(a, |v| v)
}

/// `pairwise_sum` of `f(a[i])` without materialising the mapped array: the same blocking and
/// accumulation order as numpy summing `f(a)`, so results stay bit-identical.
#[inline]
pub fn pairwise_sum_by(a: &[f64], f: impl Fn(f64) -> f64 + Copy) -> f64 {
    pairwise_sums(a, |v| [f(v)])[0]
}

/// Several [`pairwise_sum_by`] at once in one pass over `a`: component `c` of the result is
/// exactly numpy's pairwise sum of `f(a)[c]`.
#[inline]
pub fn pairwise_sums<const N: usize>(a: &[f64], f: impl Fn(f64) -> [f64; N] + Copy) -> [f64; N] {
    const BLOCK: usize = 128;
    let n = a.len();
    let mut res = [0.0; N];
    if n < 8 {
        for &v in a {
            let y = f(v);
            for c in 0..N {
                res[c] += y[c];
            }
        }
    } else if n <= BLOCK {
        let mut r = [[0.0f64; 8]; N];
        for j in 0..8 {
            let y = f(a[j]);
            for c in 0..N {
                r[c][j] = y[c];
            }
        }
        let mut i = 8;
        while i < n - n % 8 {
            for j in 0..8 {
                let y = f(a[i + j]);
                for c in 0..N {
                    r[c][j] += y[c];
                }
            }
            i += 8;
        }
        for c in 0..N {
            let r = &r[c];
            res[c] = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        }
        while i < n {
            let y = f(a[i]);
            for c in 0..N {
                res[c] += y[c];
            }
            i += 1;
        }
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        let (lo, hi) = (pairwise_sums(&a[..n2], f), pairwise_sums(&a[n2..], f));
        for c in 0..N {
            res[c] = lo[c] + hi[c];
        }
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairwise_sum_is_exact_on_integers() {
        let x: Vec<f64> = (0..1000).map(|i| i as f64).collect();
        assert_eq!(pairwise_sum(&x), 499_500.0);
    }

    #[test]
    fn fused_sums_equal_separate_ones_bit_for_bit() {
        let x: Vec<f64> = (0..2500)
            .map(|i| ((i * 7919) % 1013) as f64 * 0.37 - 150.0)
            .collect();
        let [a, b, c] = pairwise_sums(&x, |v| [v, v * v, v.abs()]);
        assert_eq!(a, pairwise_sum(&x));
        assert_eq!(b, pairwise_sum_by(&x, |v| v * v));
        assert_eq!(c, pairwise_sum_by(&x, f64::abs));
    }
}
