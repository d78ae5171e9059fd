//! The forest's decision plot (shap's `decision_plot`): one line per window, climbing from the
//! base value at the bottom through its features' SHAP values (least important first, the most
//! important last at the top) to the window's prediction, coloured by that prediction.

use super::{title, ForestValues, MARGIN};
use crate::canvas::{Canvas, Rgb};
use crate::{color, Axes, PlotError, Range};

const ROW: i64 = 20;
const PLOT_WIDTH: i64 = 560;
const TOP: i64 = 44;
const BOTTOM: i64 = 48;

/// Decision lines of every window over the `top` features by mean |SHAP|; the others are summed
/// into one row at the bottom ("N other features"). `base` is the forest's expected value.
pub fn decision(
    data: &ForestValues,
    base: f64,
    heading: &str,
    top: usize,
) -> Result<Canvas, PlotError> {
    let m = data.features.len();
    if m == 0 || data.shap.is_empty() {
        return Err(PlotError::Empty("no forest SHAP values".into()));
    }
    if !data.shap.len().is_multiple_of(m) {
        return Err(PlotError::Input(format!(
            "{} SHAP values for {m} features",
            data.shap.len()
        )));
    }
    if !base.is_finite() {
        return Err(PlotError::Input(format!("base value {base}")));
    }
    let ranking = data.ranking();
    let shown: Vec<usize> = ranking.iter().take(top.max(1)).map(|(j, _)| *j).collect();
    let rest: Vec<usize> = ranking.iter().skip(shown.len()).map(|(j, _)| *j).collect();
    // Rows bottom to top: the rest (if any), then the shown features from least to most important.
    let mut rows: Vec<(String, Vec<usize>)> = Vec::new();
    if !rest.is_empty() {
        rows.push((format!("{} other features", rest.len()), rest));
    }
    rows.extend(
        shown
            .iter()
            .rev()
            .map(|&j| (data.features[j].clone(), vec![j])),
    );
    let windows = data.windows();
    // Each window's cumulative output after each row (NaN SHAP counts as 0: a missing value).
    let paths: Vec<Vec<f64>> = (0..windows)
        .map(|w| {
            let mut at = base;
            let mut path = vec![base];
            for (_, cols) in &rows {
                at += cols
                    .iter()
                    .map(|&j| data.shap[w * m + j])
                    .filter(|v| v.is_finite())
                    .sum::<f64>();
                path.push(at);
            }
            path
        })
        .collect();
    let x = Range::of(paths.iter().flatten().copied())
        .ok_or_else(|| PlotError::Empty("every SHAP value is NaN".into()))?
        .padded(0.05);
    let finals: Vec<f64> = paths.iter().map(|p| p[p.len() - 1]).collect();
    let shade = Range::of(finals.iter().copied()).unwrap_or(Range::new(0.0, 1.0));
    let label_width = rows
        .iter()
        .map(|(name, _)| Canvas::text_width(name, 1))
        .max()
        .unwrap_or(0)
        + 16;
    let n = rows.len() as i64;
    let axes = Axes {
        left: MARGIN + label_width,
        top: TOP,
        width: PLOT_WIDTH,
        height: n * ROW,
        x,
        y: Range::new(0.0, n as f64),
    };
    let mut canvas = Canvas::new(
        (axes.left + PLOT_WIDTH + 110) as usize,
        (TOP + axes.height + BOTTOM) as usize,
        Rgb::WHITE,
    );
    title(&mut canvas, heading);
    // Row r (0 = bottom) spans y from its lower edge (value before it) to its upper edge.
    let edge = |r: usize| axes.top + axes.height - r as i64 * ROW;
    for (r, (name, _)) in rows.iter().enumerate() {
        let centre = edge(r) - ROW / 2;
        canvas.line(
            axes.left,
            edge(r + 1),
            axes.left + PLOT_WIDTH - 1,
            edge(r + 1),
            Rgb::LIGHT_GREY,
        );
        canvas.text(
            axes.left - 8 - Canvas::text_width(name, 1),
            centre - 4,
            name,
            Rgb::BLACK,
            1,
        );
    }
    let b = axes.px(base);
    canvas.line(b, axes.top, b, axes.top + axes.height - 1, Rgb::GREY);
    let mut order: Vec<usize> = (0..windows).collect();
    // Extreme predictions drawn last, on top.
    order.sort_by(|&a, &c| {
        let mid = (shade.lo + shade.hi) / 2.0;
        (finals[a] - mid).abs().total_cmp(&(finals[c] - mid).abs())
    });
    for w in order {
        let t = if shade.hi > shade.lo {
            ((finals[w] - shade.lo) / (shade.hi - shade.lo)) as f32
        } else {
            0.5
        };
        let colour = color::low_high(t);
        for r in 0..rows.len() {
            canvas.line(
                axes.px(paths[w][r]),
                edge(r),
                axes.px(paths[w][r + 1]),
                edge(r + 1),
                colour,
            );
        }
    }
    axes.draw_x_ticks(&mut canvas, "model output (predicted magnitude)");
    canvas.stroke_rect(axes.left, axes.top, axes.width, axes.height, Rgb::BLACK);
    super::colour_bar(
        &mut canvas,
        axes.left + PLOT_WIDTH + 20,
        axes.top,
        axes.height.min(200),
        shade,
        |v| {
            color::low_high(if shade.hi > shade.lo {
                ((v - shade.lo) / (shade.hi - shade.lo)) as f32
            } else {
                0.5
            })
        },
        "prediction",
    );
    Ok(canvas)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> ForestValues {
        // Two windows: "big" pushes one up by 1 and the other down by 1; "small" barely moves.
        ForestValues {
            features: vec!["small".into(), "big".into()],
            shap: vec![0.01, 1.0, -0.01, -1.0],
            values: vec![0.0; 4],
        }
    }

    /// The first coloured (non-grey) pixel's x on image row `y`, scanning the plot from the left.
    fn coloured_x(canvas: &Canvas, left: i64, y: i64) -> Option<i64> {
        (left..left + PLOT_WIDTH).find(|&x| {
            canvas
                .pixel(x as usize, y as usize)
                .is_some_and(|p| p.0 != p.1 || p.1 != p.2)
        })
    }

    #[test]
    fn lines_start_at_the_base_value_and_end_at_each_prediction() {
        let d = data();
        let canvas = decision(&d, 3.0, "decision", 10).unwrap();
        let left = MARGIN + Canvas::text_width("small", 1) + 16;
        let x = Range::new(1.99, 4.01).padded(0.05);
        let axes = Axes {
            left,
            top: TOP,
            width: PLOT_WIDTH,
            height: 2 * ROW,
            x,
            y: Range::new(0.0, 2.0),
        };
        // Just above the bottom edge both lines are at the base value.
        let bottom = TOP + 2 * ROW - 3;
        let at_base = coloured_x(&canvas, left, bottom).unwrap();
        assert!(
            (at_base - axes.px(3.0)).abs() <= 2,
            "{at_base} vs {}",
            axes.px(3.0)
        );
        // Near the top the low prediction's line (2.99 → 1.99 over the row) is the leftmost:
        // one pixel below the top edge it is a twentieth of the way back, at 2.04 (the line
        // crosses about 13 pixels per row there, so its leftmost pixel is up to 7 short).
        let at_top = coloured_x(&canvas, left, TOP + 1).unwrap();
        let want = axes.px(2.04);
        assert!((at_top - want).abs() <= 7, "{at_top} vs {want}");
        let low = canvas.pixel(at_top as usize, (TOP + 1) as usize).unwrap();
        assert!(low.2 > low.0, "the lowest prediction is not blue: {low:?}");
    }

    #[test]
    fn features_beyond_top_are_summed_in_one_row() {
        let d = data();
        // top = 1: "big" is shown, "small" goes into "1 other features"; still draws.
        assert!(decision(&d, 3.0, "decision", 1).is_ok());
        assert!(decision(&d, f64::NAN, "decision", 1).is_err());
    }
}
