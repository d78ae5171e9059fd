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

/// Several classes, as the paper reports them: per-class recall, their mean ("average
/// accuracy", scikit-learn's `balanced_accuracy_score`) and the confusion matrix normalised per
/// true class (`confusion_matrix(normalize="true")`). A class absent from the truth has recall 0
/// and a zero row, and is left out of the mean.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MulticlassMetrics {
    pub n: usize,
    pub classes: Vec<String>,
    pub accuracy: f64,
    pub recall: Vec<f64>,
    pub mean_recall: f64,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<usize>>,
    /// Each row divided by its sum.
    pub normalized: Vec<Vec<f64>>,
}

impl MulticlassMetrics {
    /// From class indices in `0..classes.len()`; pairs outside that range are not counted.
    pub fn from_labels(classes: &[String], truth: &[usize], predicted: &[usize]) -> Self {
        let k = classes.len();
        let mut confusion = vec![vec![0usize; k]; k];
        let mut n = 0;
        for (&t, &p) in truth.iter().zip(predicted) {
            if t < k && p < k {
                confusion[t][p] += 1;
                n += 1;
            }
        }
        let row_sums: Vec<usize> = confusion.iter().map(|r| r.iter().sum()).collect();
        let normalized: Vec<Vec<f64>> = confusion
            .iter()
            .zip(&row_sums)
            .map(|(row, &s)| {
                row.iter()
                    .map(|&c| if s == 0 { 0.0 } else { c as f64 / s as f64 })
                    .collect()
            })
            .collect();
        let recall: Vec<f64> = (0..k).map(|i| normalized[i][i]).collect();
        let present: Vec<f64> = (0..k)
            .filter(|&i| row_sums[i] > 0)
            .map(|i| recall[i])
            .collect();
        let correct: usize = (0..k).map(|i| confusion[i][i]).sum();
        Self {
            n,
            classes: classes.to_vec(),
            accuracy: if n == 0 {
                0.0
            } else {
                correct as f64 / n as f64
            },
            mean_recall: if present.is_empty() {
                0.0
            } else {
                present.iter().sum::<f64>() / present.len() as f64
            },
            recall,
            confusion,
            normalized,
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
    fn mean_recall_weighs_classes_equally() {
        let names: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let m =
            MulticlassMetrics::from_labels(&names, &[0, 0, 0, 0, 1, 1, 2], &[0, 0, 0, 1, 1, 0, 1]);
        assert_eq!(
            m.confusion,
            vec![vec![3, 1, 0], vec![1, 1, 0], vec![0, 1, 0]]
        );
        assert_eq!(m.recall, vec![0.75, 0.5, 0.0]);
        assert!((m.mean_recall - 1.25 / 3.0).abs() < 1e-12);
        assert!((m.accuracy - 4.0 / 7.0).abs() < 1e-12);
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
