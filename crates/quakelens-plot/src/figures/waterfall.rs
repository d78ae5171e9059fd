//! One window's forest explanation as a waterfall: from the base value at the bottom, each
//! feature's SHAP value moves the running total until it reaches the prediction at the top.

use super::{title, MARGIN};
use crate::canvas::{Canvas, Rgb};
use crate::{color, Axes, PlotError, Range};

const ROW: i64 = 22;
const PLOT_WIDTH: i64 = 520;
const TOP: i64 = 64;
const BOTTOM: i64 = 56;

/// One feature's part in a prediction.
#[derive(Clone, Debug)]
pub struct Contribution {
    pub feature: String,
    /// The feature's value in this window (NaN when missing).
    pub value: f64,
    pub shap: f64,
}

fn label(c: &Contribution) -> String {
    if c.value.is_finite() {
        format!("{} = {}", c.feature, short_number(c.value))
    } else {
        format!("{} = missing", c.feature)
    }
}

/// Four significant digits, no trailing noise.
fn short_number(v: f64) -> String {
    if v != 0.0 && (v.abs() >= 1e5 || v.abs() < 1e-3) {
        format!("{v:.3e}")
    } else {
        let digits = (3 - v.abs().max(1e-12).log10().floor() as i64).clamp(0, 6) as usize;
        format!("{v:.digits$}")
    }
}

/// The waterfall of the `top` largest |SHAP| contributions; the rest are summed in one bar.
pub fn waterfall(
    base_value: f64,
    contributions: &[Contribution],
    heading: &str,
    top: usize,
) -> Result<Canvas, PlotError> {
    if contributions.is_empty() {
        return Err(PlotError::Empty("no SHAP values for this window".into()));
    }
    if let Some(c) = contributions.iter().find(|c| !c.shap.is_finite()) {
        return Err(PlotError::Input(format!(
            "SHAP value of {} is {}",
            c.feature, c.shap
        )));
    }
    let mut order: Vec<&Contribution> = contributions.iter().collect();
    order.sort_by(|a, b| b.shap.abs().total_cmp(&a.shap.abs()));
    let shown = top.max(1).min(order.len());
    // Rows from top to bottom: the largest contributions, then the rest together.
    let mut rows: Vec<(String, f64)> = order[..shown].iter().map(|c| (label(c), c.shap)).collect();
    if order.len() > shown {
        let rest: f64 = order[shown..].iter().map(|c| c.shap).sum();
        rows.push((format!("{} other features", order.len() - shown), rest));
    }
    let prediction = base_value + contributions.iter().map(|c| c.shap).sum::<f64>();
    // Running totals from the bottom row up.
    let mut ends = vec![(0.0, 0.0); rows.len()];
    let mut total = base_value;
    for (i, (_, v)) in rows.iter().enumerate().rev() {
        ends[i] = (total, total + v);
        total += v;
    }
    let x = Range::of(
        ends.iter()
            .flat_map(|(a, b)| [*a, *b])
            .chain([base_value, prediction]),
    )
    .expect("finite totals")
    .padded(0.08);
    let label_width = rows
        .iter()
        .map(|(l, _)| Canvas::text_width(l, 1))
        .max()
        .unwrap_or(0)
        + 16;
    let axes = Axes {
        left: MARGIN + label_width,
        top: TOP,
        width: PLOT_WIDTH,
        height: rows.len() as i64 * ROW,
        x,
        y: Range::new(0.0, rows.len() as f64),
    };
    let mut canvas = Canvas::new(
        (axes.left + PLOT_WIDTH + 2 * MARGIN) as usize,
        (TOP + axes.height + BOTTOM) as usize,
        Rgb::WHITE,
    );
    title(&mut canvas, heading);
    let bottom = axes.top + axes.height;
    for (v, name) in [(base_value, "E[f(X)]"), (prediction, "f(x)")] {
        let px = axes.px(v);
        for y in (axes.top..bottom).step_by(4) {
            canvas.line(px, y, px, y + 1, Rgb::GREY);
        }
        let text = format!("{name} = {}", short_number(v));
        let y = if name == "f(x)" {
            axes.top - 14
        } else {
            bottom + 34
        };
        canvas.text(
            px - Canvas::text_width(&text, 1) / 2,
            y,
            &text,
            Rgb::BLACK,
            1,
        );
    }
    for (i, ((text, v), (from, to))) in rows.iter().zip(&ends).enumerate() {
        let y = axes.top + i as i64 * ROW;
        let (a, b) = (axes.px(from.min(*to)), axes.px(from.max(*to)));
        canvas.fill_rect(a, y + 4, (b - a).max(1), ROW - 8, color::sign(*v));
        canvas.text(
            axes.left - 8 - Canvas::text_width(text, 1),
            y + ROW / 2 - 4,
            text,
            Rgb::BLACK,
            1,
        );
        let amount = format!("{}{}", if *v >= 0.0 { "+" } else { "" }, short_number(*v));
        let w = Canvas::text_width(&amount, 1);
        let ax = if b + 4 + w < axes.left + PLOT_WIDTH {
            b + 4
        } else {
            a - 4 - w
        };
        canvas.text(ax, y + ROW / 2 - 4, &amount, Rgb::BLACK, 1);
    }
    axes.draw_x_ticks(&mut canvas, "");
    canvas.stroke_rect(axes.left, axes.top, axes.width, axes.height, Rgb::BLACK);
    Ok(canvas)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(feature: &str, value: f64, shap: f64) -> Contribution {
        Contribution {
            feature: feature.into(),
            value,
            shap,
        }
    }

    #[test]
    fn bars_run_from_the_base_to_the_prediction() {
        let parts = [
            c("a", 1.0, 0.5),
            c("b", 2.0, -0.2),
            c("c", f64::NAN, 0.05),
            c("d", 0.0, 0.01),
        ];
        let canvas = waterfall(3.0, &parts, "one window", 2).unwrap();
        // Rows: a (+0.5) on top, b (−0.2), then "2 other features" (+0.06).
        let labels = ["a = 1.000", "b = 2.000", "2 other features"];
        let label_width = labels
            .iter()
            .map(|l| Canvas::text_width(l, 1))
            .max()
            .unwrap()
            + 16;
        let x = Range::new(2.86, 3.36).padded(0.08);
        let axes = Axes {
            left: MARGIN + label_width,
            top: TOP,
            width: PLOT_WIDTH,
            height: 3 * ROW,
            x,
            y: Range::new(0.0, 3.0),
        };
        let mid = |row: i64, v: f64| {
            canvas
                .pixel(axes.px(v) as usize, (TOP + row * ROW + 5) as usize)
                .unwrap()
        };
        // Bottom row: 3.0 → 3.06 (red); middle: 3.06 → 2.86 (blue); top: 2.86 → 3.36 (red).
        assert_eq!(mid(2, 3.03), color::sign(1.0));
        assert_eq!(mid(1, 2.96), color::sign(-1.0));
        assert_eq!(mid(0, 3.2), color::sign(1.0));
        assert_eq!(
            mid(0, 2.84),
            Rgb::WHITE,
            "the top bar starts where the one below ended"
        );
    }

    #[test]
    fn numbers_are_short_and_non_finite_shap_is_refused() {
        assert_eq!(short_number(1234.5678), "1235");
        assert_eq!(short_number(0.012345), "0.01235");
        assert_eq!(short_number(2.0e-5), "2.000e-5");
        let err = waterfall(0.0, &[c("x", 1.0, f64::NAN)], "t", 5).unwrap_err();
        assert!(err.to_string().contains("SHAP value of x is NaN"), "{err}");
        assert!(waterfall(0.0, &[], "t", 5).is_err());
    }
}
