//! The paper's low-pass experiment as a figure: a score (mean per-class recall) against the
//! low-pass cutoff, with the unfiltered score and chance as horizontal references.

use super::{title, MARGIN};
use crate::canvas::{Canvas, Rgb};
use crate::{Axes, PlotError, Range};

const WIDTH: i64 = 560;
const HEIGHT: i64 = 320;
const TOP: i64 = 44;
const LEFT: i64 = 64;
const LINE: Rgb = Rgb(31, 119, 180);
const REFERENCE: Rgb = Rgb(214, 39, 40);

/// `points` are `(cutoff Hz, score)`; `unfiltered` and `chance` are drawn as lines across.
pub fn cutoff_curve(
    points: &[(f64, f64)],
    unfiltered: Option<f64>,
    chance: f64,
    heading: &str,
    y_title: &str,
) -> Result<Canvas, PlotError> {
    if points.is_empty() {
        return Err(PlotError::Empty("no cutoffs".into()));
    }
    if let Some((c, s)) = points
        .iter()
        .find(|(c, s)| !(c.is_finite() && s.is_finite()))
    {
        return Err(PlotError::Input(format!("cutoff {c} Hz with score {s}")));
    }
    let mut sorted = points.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let x_hi = sorted.last().map_or(1.0, |p| p.0);
    let axes = Axes {
        left: LEFT,
        top: TOP,
        width: WIDTH,
        height: HEIGHT,
        x: Range::new(0.0, x_hi * 1.05),
        y: Range::new(0.0, 1.0),
    };
    let mut canvas = Canvas::new(
        (LEFT + WIDTH + MARGIN) as usize,
        (TOP + HEIGHT + 48) as usize,
        Rgb::WHITE,
    );
    title(&mut canvas, heading);
    let across = |canvas: &mut Canvas, y: f64, colour: Rgb, dashed: bool, label: &str| {
        let py = axes.py(y);
        for x in axes.left..axes.left + axes.width {
            if !dashed || (x / 6) % 2 == 0 {
                canvas.set(x, py, colour);
            }
        }
        canvas.text(axes.left + 6, py - 10, label, colour, 1);
    };
    across(&mut canvas, chance, Rgb::GREY, true, "chance");
    if let Some(u) = unfiltered.filter(|u| u.is_finite()) {
        across(&mut canvas, u, REFERENCE, true, "unfiltered");
    }
    for pair in sorted.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        canvas.line(axes.px(a.0), axes.py(a.1), axes.px(b.0), axes.py(b.1), LINE);
    }
    for (c, s) in &sorted {
        canvas.disc(axes.px(*c), axes.py(*s), 3, LINE);
    }
    axes.draw(&mut canvas, "low-pass cutoff (Hz)", y_title);
    Ok(canvas)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_land_where_their_values_say() {
        let c = cutoff_curve(&[(10.0, 0.9), (1.0, 0.25)], Some(0.95), 0.25, "t", "recall").unwrap();
        let axes_y = |v: f64| TOP + HEIGHT - 1 - (v * (HEIGHT - 1) as f64).round() as i64;
        let x_of = |cut: f64| LEFT + (cut / 10.5 * (WIDTH - 1) as f64).round() as i64;
        assert_eq!(
            c.pixel(x_of(10.0) as usize, axes_y(0.9) as usize),
            Some(LINE)
        );
        assert_eq!(
            c.pixel(x_of(1.0) as usize, axes_y(0.25) as usize),
            Some(LINE)
        );
        assert!(cutoff_curve(&[], None, 0.5, "t", "r").is_err());
        assert!(cutoff_curve(&[(1.0, f64::NAN)], None, 0.5, "t", "r").is_err());
    }
}
