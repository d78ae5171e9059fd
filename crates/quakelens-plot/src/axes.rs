//! Data → pixel mapping with round tick values, for the figures' axes.

use crate::canvas::{Canvas, Rgb};

/// A closed data interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Range {
    pub lo: f64,
    pub hi: f64,
}

impl Range {
    pub fn new(lo: f64, hi: f64) -> Self {
        Self { lo, hi }
    }

    /// The smallest range holding every finite value (a unit range around a constant).
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Self> {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in values.into_iter().filter(|v| v.is_finite()) {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if lo > hi {
            return None;
        }
        if lo == hi {
            return Some(Self::new(lo - 0.5, hi + 0.5));
        }
        Some(Self::new(lo, hi))
    }

    /// Widened by `fraction` of its span on both sides.
    pub fn padded(self, fraction: f64) -> Self {
        let pad = (self.hi - self.lo) * fraction;
        Self::new(self.lo - pad, self.hi + pad)
    }

    fn fraction(&self, v: f64) -> f64 {
        (v - self.lo) / (self.hi - self.lo)
    }
}

/// Round tick values inside `range`, about `target` of them, on steps of 1, 2 or 5 × 10^k.
pub fn nice_ticks(range: Range, target: usize) -> Vec<f64> {
    let span = range.hi - range.lo;
    if !(span.is_finite() && span > 0.0) || target == 0 {
        return Vec::new();
    }
    let raw = span / target as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| span / s <= target as f64 + 0.5)
        .unwrap_or(10.0 * magnitude);
    let first = (range.lo / step).ceil() as i64;
    let last = (range.hi / step).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

/// A tick label: as few decimals as the step needs.
pub fn tick_label(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    let s = format!("{v:.decimals$}");
    if s.starts_with('-') && s[1..].chars().all(|c| c == '0' || c == '.') {
        s[1..].to_string()
    } else {
        s
    }
}

/// A plot area on the canvas (pixels) and the data ranges it shows; y grows upwards.
#[derive(Clone, Copy, Debug)]
pub struct Axes {
    pub left: i64,
    pub top: i64,
    pub width: i64,
    pub height: i64,
    pub x: Range,
    pub y: Range,
}

impl Axes {
    pub fn px(&self, x: f64) -> i64 {
        self.left + (self.x.fraction(x) * (self.width - 1) as f64).round() as i64
    }

    pub fn py(&self, y: f64) -> i64 {
        self.top + self.height - 1 - (self.y.fraction(y) * (self.height - 1) as f64).round() as i64
    }

    /// Frame, ticks with labels below and left, and the axis titles.
    pub fn draw(&self, canvas: &mut Canvas, x_title: &str, y_title: &str) {
        canvas.stroke_rect(self.left, self.top, self.width, self.height, Rgb::BLACK);
        self.draw_x_ticks(canvas, x_title);
        let ticks = nice_ticks(self.y, (self.height / 40).clamp(2, 8) as usize);
        let step = ticks.get(1).map_or(1.0, |b| b - ticks[0]);
        let mut widest = 0;
        for t in &ticks {
            let y = self.py(*t);
            canvas.line(self.left - 4, y, self.left - 1, y, Rgb::BLACK);
            let label = tick_label(*t, step);
            let w = Canvas::text_width(&label, 1);
            widest = widest.max(w);
            canvas.text(self.left - 6 - w, y - 4, &label, Rgb::BLACK, 1);
        }
        let title_x = self.left - 16 - widest;
        let title_w = Canvas::text_width(y_title, 1);
        canvas.text_up(
            title_x,
            self.top + (self.height + title_w) / 2,
            y_title,
            Rgb::BLACK,
            1,
        );
    }

    /// Ticks and title on the x axis only (for panels whose y axis is categorical).
    pub fn draw_x_ticks(&self, canvas: &mut Canvas, x_title: &str) {
        let ticks = nice_ticks(self.x, (self.width / 70).clamp(2, 10) as usize);
        let step = ticks.get(1).map_or(1.0, |b| b - ticks[0]);
        let bottom = self.top + self.height;
        for t in &ticks {
            let x = self.px(*t);
            canvas.line(x, bottom, x, bottom + 3, Rgb::BLACK);
            let label = tick_label(*t, step);
            canvas.text(
                x - Canvas::text_width(&label, 1) / 2,
                bottom + 6,
                &label,
                Rgb::BLACK,
                1,
            );
        }
        let w = Canvas::text_width(x_title, 1);
        canvas.text(
            self.left + (self.width - w) / 2,
            bottom + 20,
            x_title,
            Rgb::BLACK,
            1,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_inside() {
        assert_eq!(
            nice_ticks(Range::new(0.0, 50.0), 5),
            vec![0.0, 10.0, 20.0, 30.0, 40.0, 50.0]
        );
        let t = nice_ticks(Range::new(0.32, 24.68), 6);
        assert_eq!(t, vec![5.0, 10.0, 15.0, 20.0]);
        let t = nice_ticks(Range::new(-0.013, 0.021), 4);
        assert!(
            t.iter().all(|v| (-0.013..=0.021).contains(v)) && t.len() >= 3,
            "{t:?}"
        );
        assert!(nice_ticks(Range::new(1.0, 1.0), 4).is_empty());
        assert_eq!(tick_label(0.010000001, 0.01), "0.01");
        assert_eq!(tick_label(-0.0, 0.5), "0.0");
        assert_eq!(tick_label(20.0, 5.0), "20");
    }

    #[test]
    fn pixels_map_ends_to_edges_with_y_up() {
        let a = Axes {
            left: 10,
            top: 20,
            width: 101,
            height: 51,
            x: Range::new(0.0, 1.0),
            y: Range::new(-1.0, 1.0),
        };
        assert_eq!((a.px(0.0), a.px(1.0), a.px(0.5)), (10, 110, 60));
        assert_eq!((a.py(-1.0), a.py(1.0), a.py(0.0)), (70, 20, 45));
    }

    #[test]
    fn ranges_skip_non_finite_values() {
        let r = Range::of([f64::NAN, 2.0, -1.0, f64::INFINITY]).unwrap();
        assert_eq!(r, Range::new(-1.0, 2.0));
        assert!(Range::of([f64::NAN]).is_none());
        assert_eq!(Range::of([3.0]).unwrap(), Range::new(2.5, 3.5));
    }
}
