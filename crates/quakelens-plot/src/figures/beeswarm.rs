//! The forest summary: one row of dots per feature (most important on top), each dot a window
//! placed at its SHAP value and coloured by the feature's value there.

use std::collections::HashMap;

use super::{quantile, title, MARGIN};
use crate::canvas::{Canvas, Rgb};
use crate::{color, Axes, PlotError, Range};

const ROW: i64 = 20;
const PLOT_WIDTH: i64 = 560;
const TOP: i64 = 44;
const BOTTOM: i64 = 48;
const DOT: i64 = 2;

/// TreeSHAP values of many windows and the feature values they explain, both
/// `windows × features`, row-major.
#[derive(Clone, Debug)]
pub struct ForestValues {
    pub features: Vec<String>,
    pub shap: Vec<f64>,
    /// NaN where the window lacks the feature.
    pub values: Vec<f64>,
}

impl ForestValues {
    pub(super) fn windows(&self) -> usize {
        self.shap.len() / self.features.len().max(1)
    }

    fn column<'a>(&'a self, data: &'a [f64], j: usize) -> impl Iterator<Item = f64> + 'a {
        data.iter().skip(j).step_by(self.features.len()).copied()
    }

    /// Feature indices by mean |SHAP|, largest first.
    pub(super) fn ranking(&self) -> Vec<(usize, f64)> {
        let n = self.windows() as f64;
        let mut rank: Vec<(usize, f64)> = (0..self.features.len())
            .map(|j| (j, self.column(&self.shap, j).map(f64::abs).sum::<f64>() / n))
            .collect();
        rank.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        rank
    }
}

/// Beeswarm of the `top` features by mean |SHAP|.
pub fn beeswarm(data: &ForestValues, heading: &str, top: usize) -> Result<Canvas, PlotError> {
    let m = data.features.len();
    if m == 0 || data.shap.is_empty() {
        return Err(PlotError::Empty("no forest SHAP values".into()));
    }
    if !data.shap.len().is_multiple_of(m) || data.values.len() != data.shap.len() {
        return Err(PlotError::Input(format!(
            "{} SHAP values and {} feature values for {m} features",
            data.shap.len(),
            data.values.len()
        )));
    }
    let shown: Vec<(usize, f64)> = data.ranking().into_iter().take(top.max(1)).collect();
    let label_width = shown
        .iter()
        .map(|(j, _)| Canvas::text_width(&data.features[*j], 1))
        .max()
        .unwrap_or(0)
        + 16;
    let x = Range::of(
        shown
            .iter()
            .flat_map(|(j, _)| data.column(&data.shap, *j).collect::<Vec<_>>()),
    )
    .ok_or_else(|| PlotError::Empty("every SHAP value is NaN".into()))?
    .padded(0.05);
    let axes = Axes {
        left: MARGIN + label_width,
        top: TOP,
        width: PLOT_WIDTH,
        height: shown.len() as i64 * ROW,
        x,
        y: Range::new(0.0, shown.len() as f64),
    };
    let mut canvas = Canvas::new(
        (axes.left + PLOT_WIDTH + 110) as usize,
        (TOP + axes.height + BOTTOM) as usize,
        Rgb::WHITE,
    );
    title(&mut canvas, heading);
    let zero = axes.px(0.0);
    canvas.line(zero, axes.top, zero, axes.top + axes.height - 1, Rgb::GREY);
    for (r, (j, _)) in shown.iter().enumerate() {
        let centre = axes.top + r as i64 * ROW + ROW / 2;
        canvas.line(
            axes.left,
            centre,
            axes.left + PLOT_WIDTH - 1,
            centre,
            Rgb::LIGHT_GREY,
        );
        let name = &data.features[*j];
        canvas.text(
            axes.left - 8 - Canvas::text_width(name, 1),
            centre - 4,
            name,
            Rgb::BLACK,
            1,
        );
        swarm_row(&mut canvas, &axes, data, *j, centre);
    }
    axes.draw_x_ticks(
        &mut canvas,
        "SHAP value (effect on the predicted magnitude)",
    );
    canvas.stroke_rect(axes.left, axes.top, axes.width, axes.height, Rgb::BLACK);
    super::colour_bar(
        &mut canvas,
        axes.left + PLOT_WIDTH + 20,
        axes.top,
        axes.height.min(200),
        Range::new(0.0, 1.0),
        |t| color::low_high(t as f32),
        "feature value (low-high)",
    );
    Ok(canvas)
}

/// Dots of feature `j`, stacked alternately above and below the row's centre where they crowd.
fn swarm_row(canvas: &mut Canvas, axes: &Axes, data: &ForestValues, j: usize, centre: i64) {
    let values: Vec<f64> = data.column(&data.values, j).collect();
    let lo = quantile(values.iter().copied(), 0.05);
    let hi = quantile(values.iter().copied(), 0.95);
    let shade = |v: f64| match (lo, hi) {
        (Some(lo), Some(hi)) if v.is_finite() => color::low_high(if hi > lo {
            ((v - lo) / (hi - lo)) as f32
        } else {
            0.5
        }),
        _ => color::low_high(f32::NAN),
    };
    let mut dots: Vec<(f64, f64)> = data
        .column(&data.shap, j)
        .zip(values.iter().copied())
        .filter(|(s, _)| s.is_finite())
        .collect();
    dots.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut crowd: HashMap<i64, i64> = HashMap::new();
    let reach = ROW / 2 - DOT - 1;
    for (s, v) in dots {
        let x = axes.px(s);
        let k = crowd.entry(x / (2 * DOT + 1)).or_insert(0);
        let step = (*k + 1) / 2 * if *k % 2 == 1 { 1 } else { -1 };
        *k += 1;
        let y = centre + (step * DOT).clamp(-reach, reach);
        canvas.disc(x, y, DOT, shade(v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_important_feature_is_on_top_and_dots_are_coloured_by_value() {
        // Feature "big" moves the output a lot, "small" hardly; big's value sets its sign.
        let windows = 40;
        let mut shap = Vec::new();
        let mut values = Vec::new();
        for i in 0..windows {
            let v = i as f64 / windows as f64;
            shap.extend([0.01 * (v - 0.5), 2.0 * (v - 0.5)]);
            values.extend([v, v]);
        }
        let data = ForestValues {
            features: vec!["small".into(), "big".into()],
            shap,
            values,
        };
        assert_eq!(data.ranking()[0].0, 1);
        let canvas = beeswarm(&data, "forest", 10).unwrap();
        let label_width = Canvas::text_width("small", 1) + 16;
        let left = MARGIN + label_width;
        // In the top row (big), the rightmost dots are high values (red), the leftmost low (blue).
        let centre = (TOP + ROW / 2) as usize;
        let row: Vec<Rgb> = (left as usize..(left + PLOT_WIDTH) as usize)
            .filter_map(|x| {
                (centre - 8..centre + 8)
                    .filter_map(|y| canvas.pixel(x, y))
                    .find(|p| p.0 != p.1 || p.1 != p.2)
            })
            .collect();
        let (first, last) = (row[0], row[row.len() - 1]);
        assert!(first.2 > first.0, "leftmost dot not blue: {first:?}");
        assert!(last.0 > last.2, "rightmost dot not red: {last:?}");
    }

    #[test]
    fn mismatched_sizes_are_refused() {
        let data = ForestValues {
            features: vec!["a".into(), "b".into()],
            shap: vec![0.0; 4],
            values: vec![0.0; 3],
        };
        assert!(beeswarm(&data, "x", 5)
            .unwrap_err()
            .to_string()
            .contains("3 feature values"));
    }
}
