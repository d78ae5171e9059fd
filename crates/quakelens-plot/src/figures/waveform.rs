//! One window's waveform-model explanation: each channel's trace over its time segments'
//! values (red pushes the explained output up, blue down), and the frequency bands' values as
//! bars below.

use super::{title, MARGIN};
use crate::canvas::{Canvas, Rgb};
use crate::{color, Axes, PlotError, Range};

const WIDTH: i64 = 640;
const TRACE: i64 = 96;
const GAP: i64 = 28;
const TOP: i64 = 48;
const LEFT: i64 = 72;
const BARS: i64 = 160;

/// A channel's trace and its segments' values.
#[derive(Clone, Debug)]
pub struct ChannelTrace {
    pub name: String,
    pub samples: Vec<f32>,
    /// `(start s, end s, value)`.
    pub segments: Vec<(f64, f64, f64)>,
}

/// `(low Hz, high Hz, value)` of each band, lowest first.
pub type BandValue = (f64, f64, f64);

/// The figure: one panel per channel, then the bands' bars when there are any.
pub fn waveform_explanation(
    channels: &[ChannelTrace],
    rate_hz: f64,
    bands: &[BandValue],
    heading: &str,
) -> Result<Canvas, PlotError> {
    if channels.is_empty() || channels.iter().any(|c| c.samples.is_empty()) {
        return Err(PlotError::Empty("no waveform for this window".into()));
    }
    let values = channels
        .iter()
        .flat_map(|c| c.segments.iter().map(|s| s.2))
        .chain(bands.iter().map(|b| b.2));
    if let Some(v) = values.clone().find(|v| !v.is_finite()) {
        return Err(PlotError::Input(format!("a SHAP value is {v}")));
    }
    let limit = channels
        .iter()
        .flat_map(|c| c.segments.iter().map(|s| s.2.abs()))
        .fold(0.0f64, f64::max) as f32;
    let duration = channels[0].samples.len() as f64 / rate_hz;
    let panels = channels.len() as i64;
    let bars_height = if bands.is_empty() { 0 } else { BARS + 2 * GAP };
    let mut canvas = Canvas::new(
        (LEFT + WIDTH + MARGIN) as usize,
        (TOP + panels * (TRACE + GAP) + bars_height + 24) as usize,
        Rgb::WHITE,
    );
    title(&mut canvas, heading);
    for (k, ch) in channels.iter().enumerate() {
        let y = Range::of(ch.samples.iter().map(|&v| v as f64))
            .unwrap_or(Range::new(-1.0, 1.0))
            .padded(0.05);
        let axes = Axes {
            left: LEFT,
            top: TOP + k as i64 * (TRACE + GAP),
            width: WIDTH,
            height: TRACE,
            x: Range::new(0.0, duration),
            y,
        };
        for &(a, b, v) in &ch.segments {
            let (x0, x1) = (axes.px(a), axes.px(b));
            canvas.fill_rect(
                x0,
                axes.top,
                (x1 - x0).max(1),
                axes.height,
                color::diverging(v as f32, limit),
            );
        }
        let n = ch.samples.len();
        // One vertical stroke per pixel column: the samples' range there.
        for px in 0..axes.width {
            let from = (px as usize * n) / axes.width as usize;
            let to = (((px + 1) as usize * n) / axes.width as usize).clamp(from + 1, n);
            let (lo, hi) = ch.samples[from..to]
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
                    (l.min(v), h.max(v))
                });
            let x = axes.left + px;
            canvas.line(x, axes.py(lo as f64), x, axes.py(hi as f64), Rgb::BLACK);
        }
        if k + 1 == channels.len() {
            axes.draw_x_ticks(&mut canvas, "time (s)");
        }
        canvas.stroke_rect(axes.left, axes.top, axes.width, axes.height, Rgb::BLACK);
        canvas.text(
            MARGIN,
            axes.top + axes.height / 2 - 4,
            &ch.name,
            Rgb::BLACK,
            1,
        );
    }
    if !bands.is_empty() {
        let top = TOP + panels * (TRACE + GAP) + GAP;
        let y = Range::of(bands.iter().map(|b| b.2).chain([0.0]))
            .unwrap_or(Range::new(-1.0, 1.0))
            .padded(0.1);
        let axes = Axes {
            left: LEFT,
            top,
            width: WIDTH,
            height: BARS,
            x: Range::new(0.0, bands.len() as f64),
            y,
        };
        let slot = WIDTH / bands.len() as i64;
        for (i, &(low, high, v)) in bands.iter().enumerate() {
            let (y0, y1) = (axes.py(0.0), axes.py(v));
            let x = LEFT + i as i64 * slot + slot / 6;
            canvas.fill_rect(
                x,
                y0.min(y1),
                slot * 2 / 3,
                (y1 - y0).abs().max(1),
                color::sign(v),
            );
            let label = format!("{low}-{high} Hz");
            canvas.text(
                LEFT + i as i64 * slot + (slot - Canvas::text_width(&label, 1)) / 2,
                top + BARS + 6,
                &label,
                Rgb::BLACK,
                1,
            );
        }
        canvas.line(
            LEFT,
            axes.py(0.0),
            LEFT + WIDTH - 1,
            axes.py(0.0),
            Rgb::GREY,
        );
        canvas.stroke_rect(axes.left, axes.top, axes.width, axes.height, Rgb::BLACK);
        canvas.text(
            MARGIN,
            top - 14,
            "frequency bands (band-stop, exact Shapley)",
            Rgb::BLACK,
            1,
        );
    }
    Ok(canvas)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_take_the_colour_of_their_sign_and_bars_their_side_of_zero() {
        let trace = |name: &str| ChannelTrace {
            name: name.into(),
            samples: (0..2500).map(|i| (i as f32 / 30.0).sin() * 0.01).collect(),
            segments: vec![(0.0, 12.5, 2.0), (12.5, 25.0, -1.0)],
        };
        let c = waveform_explanation(
            &[trace("N"), trace("E"), trace("Z")],
            100.0,
            &[(0.0, 10.0, 0.5), (10.0, 50.0, -0.25)],
            "t",
        )
        .unwrap();
        // Near the top edge of the first panel, away from the trace: the segment's colour.
        let (y, left_x, right_x) = (TOP + 2, LEFT + 40, LEFT + WIDTH - 40);
        assert_eq!(
            c.pixel(left_x as usize, y as usize),
            Some(color::diverging(2.0, 2.0))
        );
        assert_eq!(
            c.pixel(right_x as usize, y as usize),
            Some(color::diverging(-1.0, 2.0))
        );
        let bars_top = TOP + 3 * (TRACE + GAP) + GAP;
        let slot = WIDTH / 2;
        let mid = |i: i64| (LEFT + i * slot + slot / 2) as usize;
        // Positive bar above the middle of the band panel, negative below it.
        let zero = {
            let y = Range::new(-0.25, 0.5).padded(0.1);
            let a = Axes {
                left: LEFT,
                top: bars_top,
                width: WIDTH,
                height: BARS,
                x: Range::new(0.0, 2.0),
                y,
            };
            a.py(0.0)
        };
        assert_eq!(c.pixel(mid(0), (zero - 5) as usize), Some(color::sign(0.5)));
        assert_eq!(
            c.pixel(mid(1), (zero + 5) as usize),
            Some(color::sign(-0.25))
        );
        assert!(waveform_explanation(&[], 100.0, &[], "t").is_err());
        let mut bad = trace("N");
        bad.segments[0].2 = f64::NAN;
        assert!(waveform_explanation(&[bad], 100.0, &[], "t").is_err());
    }
}
