//! The figures: a window's spectrogram beside its SHAP map, class-mean SHAP maps (the study's
//! Figure 3), the forest's beeswarm summary, decision plot and one window's waterfall, the
//! low-pass experiment's score-against-cutoff curve, and a waveform model's time and band
//! explanation of one window.

mod beeswarm;
mod curve;
mod decision;
mod spectrogram;
mod waterfall;
mod waveform;

pub use beeswarm::{beeswarm, ForestValues};
pub use curve::cutoff_curve;
pub use decision::decision;
pub use spectrogram::{class_means, window_overlay, ClassMap, Grid};
pub use waterfall::{waterfall, Contribution};
pub use waveform::{waveform_explanation, BandValue, ChannelTrace};

use crate::canvas::{Canvas, Rgb};
use crate::Range;

/// Pixels around the plot areas.
const MARGIN: i64 = 24;
const TITLE_SCALE: usize = 2;

/// The figure title, top left, in double-size letters.
fn title(canvas: &mut Canvas, text: &str) {
    canvas.text(MARGIN, 10, text, Rgb::BLACK, TITLE_SCALE);
}

/// A vertical colour bar for `range` with round ticks on its right.
fn colour_bar(
    canvas: &mut Canvas,
    left: i64,
    top: i64,
    height: i64,
    range: Range,
    colour: impl Fn(f64) -> Rgb,
    label: &str,
) {
    const WIDTH: i64 = 12;
    for row in 0..height {
        let v = range.hi - (range.hi - range.lo) * row as f64 / (height - 1).max(1) as f64;
        canvas.fill_rect(left, top + row, WIDTH, 1, colour(v));
    }
    canvas.stroke_rect(left, top, WIDTH, height, Rgb::BLACK);
    let axis = crate::Axes {
        left,
        top,
        width: WIDTH,
        height,
        x: Range::new(0.0, 1.0),
        y: range,
    };
    let ticks = crate::nice_ticks(range, (height / 35).clamp(2, 6) as usize);
    let step = ticks.get(1).map_or(1.0, |b| b - ticks[0]);
    for t in &ticks {
        let y = axis.py(*t);
        canvas.line(left + WIDTH, y, left + WIDTH + 3, y, Rgb::BLACK);
        canvas.text(
            left + WIDTH + 6,
            y - 4,
            &crate::axes::tick_label(*t, step),
            Rgb::BLACK,
            1,
        );
    }
    canvas.text_up(
        left + WIDTH + 6 + 8 * 7,
        top + (height + Canvas::text_width(label, 1)) / 2,
        label,
        Rgb::BLACK,
        1,
    );
}

/// The `q` quantile (0..=1) of the finite values, by sorting a copy.
fn quantile(values: impl IntoIterator<Item = f64>, q: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let (i, frac) = (pos.floor() as usize, pos.fract());
    Some(if i + 1 < v.len() {
        v[i] + (v[i + 1] - v[i]) * frac
    } else {
        v[i]
    })
}

/// Short form of a model hash for titles (`sha256:0123abcd…` → `0123abcd`).
pub fn short_hash(hash: &str) -> &str {
    let h = hash.strip_prefix("sha256:").unwrap_or(hash);
    &h[..h.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_and_skip_nan() {
        assert_eq!(quantile([3.0, 1.0, f64::NAN, 2.0], 0.5), Some(2.0));
        assert_eq!(quantile([0.0, 10.0], 0.25), Some(2.5));
        assert_eq!(quantile([f64::NAN], 0.5), None);
        assert_eq!(short_hash("sha256:0123456789abcdef"), "0123456789ab");
    }
}
