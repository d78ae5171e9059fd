//! Spectrogram-shaped figures: one window's log-power beside its SHAP map, and class-mean SHAP
//! maps. Frequency runs up, time to the right, one row of panels per channel.

use super::{colour_bar, quantile, title, MARGIN};
use crate::canvas::{Canvas, Rgb};
use crate::{color, Axes, PlotError, Range};

/// Pixels per spectrogram cell (time × frequency): 153 × 33 cells → 612 × 165 pixels.
const CELL_W: i64 = 4;
const CELL_H: i64 = 5;
/// Room left of a panel for its frequency ticks and title.
const Y_AXIS: i64 = 70;
/// Room right of a panel for its colour bar and labels.
const BAR: i64 = 110;
/// Room below a panel for time ticks and title, and above it for the panel's name.
const BELOW: i64 = 44;
const ABOVE: i64 = 16;
const TOP: i64 = 40;

/// The time–frequency grid values sit on: `channels × freqs × times`, row-major like the lake's
/// spectrograms.
#[derive(Clone, Debug)]
pub struct Grid {
    pub channels: Vec<String>,
    pub freqs_hz: Vec<f64>,
    pub times_s: Vec<f64>,
}

impl Grid {
    fn cells(&self) -> usize {
        self.channels.len() * self.freqs_hz.len() * self.times_s.len()
    }

    fn check(&self, values: &[f32], what: &str) -> Result<(), PlotError> {
        if self.channels.is_empty() || self.freqs_hz.is_empty() || self.times_s.is_empty() {
            return Err(PlotError::Empty(format!(
                "{what}: an empty spectrogram grid"
            )));
        }
        if values.len() != self.cells() {
            return Err(PlotError::Input(format!(
                "{what}: {} values for {} channels × {} frequencies × {} times",
                values.len(),
                self.channels.len(),
                self.freqs_hz.len(),
                self.times_s.len()
            )));
        }
        Ok(())
    }

    fn panel_size(&self) -> (i64, i64) {
        (
            self.times_s.len() as i64 * CELL_W,
            self.freqs_hz.len() as i64 * CELL_H,
        )
    }

    /// Data ranges of the cell edges (values are cell centres).
    fn extent(&self) -> (Range, Range) {
        let edge = |v: &[f64]| {
            let half = if v.len() > 1 {
                (v[1] - v[0]) / 2.0
            } else {
                0.5
            };
            Range::new(v[0] - half, v[v.len() - 1] + half)
        };
        (edge(&self.times_s), edge(&self.freqs_hz))
    }

    /// Draws channel `c` of `values` into a panel at (left, top) with axes and a caption.
    fn panel(
        &self,
        canvas: &mut Canvas,
        left: i64,
        top: i64,
        caption: &str,
        cell: impl Fn(usize) -> Rgb,
        c: usize,
    ) {
        let (nf, nt) = (self.freqs_hz.len(), self.times_s.len());
        for row in 0..nf {
            let f = nf - 1 - row; // high frequencies on top
            for t in 0..nt {
                let colour = cell(c * nf * nt + f * nt + t);
                canvas.fill_rect(
                    left + t as i64 * CELL_W,
                    top + row as i64 * CELL_H,
                    CELL_W,
                    CELL_H,
                    colour,
                );
            }
        }
        let (w, h) = self.panel_size();
        let (x, y) = self.extent();
        let axes = Axes {
            left,
            top,
            width: w,
            height: h,
            x,
            y,
        };
        axes.draw(canvas, "time (s)", "frequency (Hz)");
        canvas.text(left, top - ABOVE + 4, caption, Rgb::BLACK, 1);
    }
}

/// Symmetric colour limit for SHAP maps: the 99.5th percentile of |value|, so one hot cell
/// does not wash out the rest.
fn shap_limit(values: impl IntoIterator<Item = f32>) -> f32 {
    let q = quantile(values.into_iter().map(|v| v.abs() as f64), 0.995).unwrap_or(0.0);
    if q > 0.0 {
        q as f32
    } else {
        1.0
    }
}

/// One window: each channel's log-power spectrogram (left) and its SHAP values laid over a
/// grey copy of it (right; red raises the explained logit, blue lowers it).
pub fn window_overlay(
    grid: &Grid,
    heading: &str,
    spectrogram: &[f32],
    shap: &[f32],
) -> Result<Canvas, PlotError> {
    grid.check(spectrogram, "spectrogram")?;
    grid.check(shap, "SHAP values")?;
    let power = Range::new(
        quantile(spectrogram.iter().map(|v| *v as f64), 0.01).unwrap_or(0.0),
        quantile(spectrogram.iter().map(|v| *v as f64), 0.99).unwrap_or(1.0),
    );
    let power = if power.hi > power.lo {
        power
    } else {
        Range::new(power.lo - 0.5, power.lo + 0.5)
    };
    let level = |v: f32| ((v as f64 - power.lo) / (power.hi - power.lo)) as f32;
    let limit = shap_limit(shap.iter().copied());

    let (w, h) = grid.panel_size();
    let column = Y_AXIS + w + BAR;
    let row = ABOVE + h + BELOW;
    let mut canvas = Canvas::new(
        (MARGIN + 2 * column) as usize,
        (TOP + grid.channels.len() as i64 * row + MARGIN) as usize,
        Rgb::WHITE,
    );
    title(&mut canvas, heading);
    for (c, name) in grid.channels.iter().enumerate() {
        let top = TOP + ABOVE + c as i64 * row;
        let left = MARGIN + Y_AXIS;
        grid.panel(
            &mut canvas,
            left,
            top,
            &format!("{name}: log power"),
            |i| color::sequential(level(spectrogram[i])),
            c,
        );
        colour_bar(
            &mut canvas,
            left + w + 14,
            top,
            h,
            power,
            |v| color::sequential(level(v as f32)),
            "log power",
        );
        let left = left + column;
        grid.panel(
            &mut canvas,
            left,
            top,
            &format!("{name}: SHAP over power"),
            |i| {
                let grey = (235.0 - 150.0 * level(spectrogram[i]).clamp(0.0, 1.0)) as u8;
                let weight = (shap[i].abs() / limit).min(1.0);
                Rgb(grey, grey, grey).mix(color::sign(shap[i] as f64), weight)
            },
            c,
        );
        colour_bar(
            &mut canvas,
            left + w + 14,
            top,
            h,
            Range::new(-limit as f64, limit as f64),
            |v| color::diverging(v as f32, limit),
            "SHAP",
        );
    }
    Ok(canvas)
}

/// Mean SHAP map of one class (e.g. windows labelled or predicted aftershock).
#[derive(Clone, Debug)]
pub struct ClassMap {
    pub label: String,
    pub windows: usize,
    pub values: Vec<f32>,
}

/// Class-mean SHAP maps side by side (one column per class, one row per channel) on one
/// symmetric scale, so the classes compare directly.
pub fn class_means(grid: &Grid, heading: &str, maps: &[ClassMap]) -> Result<Canvas, PlotError> {
    if maps.is_empty() {
        return Err(PlotError::Empty("no class has explained windows".into()));
    }
    for m in maps {
        grid.check(&m.values, &format!("class {}", m.label))?;
    }
    let limit = shap_limit(maps.iter().flat_map(|m| m.values.iter().copied()));
    let (w, h) = grid.panel_size();
    let column = Y_AXIS + w + 30;
    let row = ABOVE + h + BELOW;
    let mut canvas = Canvas::new(
        (MARGIN + maps.len() as i64 * column + BAR) as usize,
        (TOP + grid.channels.len() as i64 * row + MARGIN) as usize,
        Rgb::WHITE,
    );
    title(&mut canvas, heading);
    for (c, name) in grid.channels.iter().enumerate() {
        let top = TOP + ABOVE + c as i64 * row;
        for (k, m) in maps.iter().enumerate() {
            let left = MARGIN + Y_AXIS + k as i64 * column;
            grid.panel(
                &mut canvas,
                left,
                top,
                &format!("{name}: mean SHAP, {} ({} windows)", m.label, m.windows),
                |i| color::diverging(m.values[i], limit),
                c,
            );
        }
        colour_bar(
            &mut canvas,
            MARGIN + Y_AXIS + (maps.len() as i64 - 1) * column + w + 14,
            top,
            h,
            Range::new(-limit as f64, limit as f64),
            |v| color::diverging(v as f32, limit),
            "mean SHAP",
        );
    }
    Ok(canvas)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> Grid {
        Grid {
            channels: vec!["Z".into(), "N".into()],
            freqs_hz: (0..5).map(|f| f as f64 * 12.5).collect(),
            times_s: (0..8).map(|t| 0.32 + t as f64 * 0.16).collect(),
        }
    }

    /// The canvas colour at the centre of cell (channel, freq, time) of panel `column`.
    fn cell_colour(canvas: &Canvas, g: &Grid, column: i64, c: usize, f: usize, t: usize) -> Rgb {
        let (w, h) = g.panel_size();
        let left = MARGIN + Y_AXIS + column * (Y_AXIS + w + BAR);
        let top = TOP + ABOVE + c as i64 * (ABOVE + h + BELOW);
        let row = (g.freqs_hz.len() - 1 - f) as i64;
        canvas
            .pixel(
                (left + t as i64 * CELL_W + CELL_W / 2) as usize,
                (top + row * CELL_H + CELL_H / 2) as usize,
            )
            .unwrap()
    }

    #[test]
    fn overlay_puts_each_value_in_its_cell_with_low_frequencies_at_the_bottom() {
        let g = grid();
        let spec = vec![0.0f32; 80];
        let mut shap = vec![0.0f32; 80];
        shap[40 + 8 + 3] = 1.0; // channel N, 12.5 Hz, 4th frame: raises the output
        shap[4 * 8 + 6] = -1.0; // channel Z, 50 Hz, 7th frame: lowers it
        let canvas = window_overlay(&g, "test", &spec, &shap).unwrap();
        assert_eq!(cell_colour(&canvas, &g, 1, 1, 1, 3), color::sign(1.0));
        assert_eq!(cell_colour(&canvas, &g, 1, 0, 4, 6), color::sign(-1.0));
        let neutral = cell_colour(&canvas, &g, 1, 0, 0, 0);
        assert_eq!(neutral.0, neutral.1, "zero SHAP stays grey: {neutral:?}");
        // The left panel shows power, untouched by SHAP.
        assert_eq!(
            cell_colour(&canvas, &g, 0, 1, 1, 3),
            cell_colour(&canvas, &g, 0, 0, 0, 0)
        );
    }

    #[test]
    fn class_means_share_one_scale() {
        let g = grid();
        let mut a = vec![0.0f32; 80];
        a[0] = 2.0;
        let mut b = vec![0.0f32; 80];
        b[0] = 1.0;
        let maps = [
            ClassMap {
                label: "foreshock".into(),
                windows: 3,
                values: a,
            },
            ClassMap {
                label: "aftershock".into(),
                windows: 4,
                values: b,
            },
        ];
        let canvas = class_means(&g, "means", &maps).unwrap();
        let (w, h) = g.panel_size();
        let at = |k: i64| {
            let left = MARGIN + Y_AXIS + k * (Y_AXIS + w + 30);
            let top = TOP + ABOVE;
            canvas
                .pixel((left + 2) as usize, (top + h - 2) as usize)
                .unwrap()
        };
        // The stronger class saturates; the weaker one is paler on the same scale.
        assert_eq!(at(0), color::sign(1.0));
        assert!(at(1).0 == 255 && at(1).1 > at(0).1, "{:?}", at(1));
    }

    #[test]
    fn wrong_sizes_and_empty_input_are_errors() {
        let g = grid();
        let err = window_overlay(&g, "t", &[0.0; 80], &[0.0; 79]).unwrap_err();
        assert!(
            err.to_string().contains("79 values for 2 channels"),
            "{err}"
        );
        assert!(class_means(&g, "t", &[]).is_err());
    }
}
