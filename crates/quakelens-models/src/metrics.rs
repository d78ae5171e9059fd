//! Held-out quality figures saved beside every trained model.

use serde::{Deserialize, Serialize};

/// Binary classification with class 1 (aftershock) as positive.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClassificationMetrics {
    pub n: usize,
    pub accuracy: f64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// `[[tn, fp], [fn, tp]]`: rows are the true class, columns the predicted one.
    pub confusion: [[usize; 2]; 2],
}

impl ClassificationMetrics {
    /// From true labels and predicted labels (0/1). Undefined ratios (no positives) are 0.
    pub fn from_labels(truth: &[i32], predicted: &[i32]) -> Self {
        let mut c = [[0usize; 2]; 2];
        for (&t, &p) in truth.iter().zip(predicted) {
            c[(t == 1) as usize][(p == 1) as usize] += 1;
        }
        let n = truth.len().min(predicted.len());
        let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let (tp, fp, fn_) = (c[1][1], c[0][1], c[1][0]);
        let precision = ratio(tp, tp + fp);
        let recall = ratio(tp, tp + fn_);
        let f1 = if precision + recall == 0.0 {
            0.0
        } else {
            2.0 * precision * recall / (precision + recall)
        };
        Self {
            n,
            accuracy: ratio(c[0][0] + tp, n),
            precision,
            recall,
            f1,
            confusion: c,
        }
    }
}

/// Regression quality (R² as scikit-learn's `r2_score`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RegressionMetrics {
    pub n: usize,
    pub r2: f64,
    pub mae: f64,
    pub rmse: f64,
}

impl RegressionMetrics {
    pub fn from_predictions(truth: &[f64], predicted: &[f64]) -> Self {
        let n = truth.len().min(predicted.len());
        if n == 0 {
            return Self::default();
        }
        let mean = truth[..n].iter().sum::<f64>() / n as f64;
        let (mut ss_res, mut ss_tot, mut abs) = (0.0, 0.0, 0.0);
        for (&t, &p) in truth.iter().zip(predicted) {
            ss_res += (t - p) * (t - p);
            ss_tot += (t - mean) * (t - mean);
            abs += (t - p).abs();
        }
        let r2 = if ss_tot == 0.0 {
            if ss_res == 0.0 {
                1.0
            } else {
                0.0
            }
        } else {
            1.0 - ss_res / ss_tot
        };
        Self {
            n,
            r2,
            mae: abs / n as f64,
            rmse: (ss_res / n as f64).sqrt(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confusion_and_ratios() {
        let m = ClassificationMetrics::from_labels(&[0, 0, 1, 1, 1], &[0, 1, 1, 1, 0]);
        assert_eq!(m.confusion, [[1, 1], [1, 2]]);
        assert!((m.accuracy - 0.6).abs() < 1e-12);
        assert!((m.precision - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.recall - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.f1 - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn r2_of_perfect_and_mean_predictions() {
        let y = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(RegressionMetrics::from_predictions(&y, &y).r2, 1.0);
        let m = RegressionMetrics::from_predictions(&y, &[2.5; 4]);
        assert!(m.r2.abs() < 1e-12);
        assert!((m.mae - 1.0).abs() < 1e-12);
    }
}
