//! SHAP of waveform models (the paper's 1-D CNN). Two views of one window:
//! - **time**: the players are segments of each channel; Owen values over a hierarchy that
//!   halves time first, then channels (the image partition explainer on a channels × segments
//!   grid), removed segments replaced by the masker's background;
//! - **frequency**: the players are frequency bands of all channels together, removed by
//!   band-stop masking (the band's Fourier coefficients zeroed); few bands, so every coalition
//!   is played and the values are exact Shapley values.
//!
//! Both add up: Σ values = f(window) − f(everything removed).

use quakelens_signal::bands::Bands;

use crate::image::{
    exact_shapley_game, partition_game, Attribution, Coalition, Game, Masker, ModelFn, Region,
    Shape,
};

/// Time segments of each channel, `length` samples each (the last may be shorter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segments {
    pub channels: usize,
    pub samples: usize,
    pub length: usize,
}

impl Segments {
    pub fn new(channels: usize, samples: usize, length: usize) -> Result<Self, String> {
        if channels == 0 || samples == 0 {
            return Err(format!("no waveform to explain ({channels} × {samples})"));
        }
        if length == 0 || length > samples {
            return Err(format!(
                "segments of {length} samples for {samples}-sample traces: use 1 to {samples}"
            ));
        }
        Ok(Self {
            channels,
            samples,
            length,
        })
    }

    /// Segments per channel.
    pub fn count(&self) -> usize {
        self.samples.div_ceil(self.length)
    }

    /// Samples `start..end` of segment `s`.
    pub fn bounds(&self, s: usize) -> (usize, usize) {
        (s * self.length, ((s + 1) * self.length).min(self.samples))
    }

    /// The players as an image the partition explainer halves: a row per channel, a column per
    /// segment; value `c · count + s` is channel `c`, segment `s`.
    pub fn grid(&self) -> Shape {
        Shape {
            channels: 1,
            height: self.channels,
            width: self.count(),
        }
    }

    /// The window's own layout (`channels` traces back to back), for maskers.
    fn traces(&self) -> Shape {
        Shape {
            channels: self.channels,
            height: 1,
            width: self.samples,
        }
    }
}

/// The model's output with the segments outside a coalition replaced by the background.
struct SegmentGame<'m, 'a> {
    model: &'m mut ModelFn<'a>,
    x: &'m [f32],
    background: Vec<f32>,
    segments: Segments,
    inputs: Vec<f32>,
}

impl Game for SegmentGame<'_, '_> {
    fn play(&mut self, coalitions: &[&Coalition]) -> Result<Vec<f64>, String> {
        let s = self.segments;
        self.inputs.clear();
        for coalition in coalitions {
            for c in 0..s.channels {
                for seg in 0..s.count() {
                    let (a, b) = s.bounds(seg);
                    let from = if coalition.has(c * s.count() + seg) {
                        self.x
                    } else {
                        &self.background
                    };
                    let at = c * s.samples;
                    self.inputs.extend_from_slice(&from[at + a..at + b]);
                }
            }
        }
        (self.model)(&self.inputs, coalitions.len())
    }
}

fn segment_game<'m, 'a>(
    model: &'m mut ModelFn<'a>,
    x: &'m [f32],
    segments: Segments,
    masker: Masker,
) -> Result<SegmentGame<'m, 'a>, String> {
    if x.len() != segments.channels * segments.samples {
        return Err(format!(
            "a window of {} values for {} channels × {} samples",
            x.len(),
            segments.channels,
            segments.samples
        ));
    }
    if matches!(masker, Masker::Inpaint(_)) {
        return Err("inpainting is an image masker: use zero, mean or blur for waveforms".into());
    }
    Ok(SegmentGame {
        model,
        x,
        background: masker.background(x, segments.traces()),
        segments,
        inputs: Vec::new(),
    })
}

/// Owen values of each (channel, segment) with at most `max_evals` model evaluations
/// (`values[c · count + s]`).
pub fn explain_segments(
    model: &mut ModelFn<'_>,
    x: &[f32],
    segments: Segments,
    masker: Masker,
    max_evals: usize,
    batch: usize,
) -> Result<Attribution, String> {
    let mut game = segment_game(model, x, segments, masker)?;
    partition_game(&mut game, segments.grid(), max_evals, batch)
}

/// Exact Shapley values of each (channel, segment) (at most 20 of them: 2^players
/// evaluations), the ground truth the partition values are checked against.
pub fn exact_segments(
    model: &mut ModelFn<'_>,
    x: &[f32],
    segments: Segments,
    masker: Masker,
    batch: usize,
) -> Result<Vec<f64>, String> {
    let grid = segments.grid();
    let mut game = segment_game(model, x, segments, masker)?;
    exact_shapley_game(&mut game, grid, &cells(grid), batch)
}

/// Every pixel of `grid` as a player of its own, row by row.
fn cells(grid: Shape) -> Vec<Region> {
    (0..grid.height)
        .flat_map(|r| {
            (0..grid.width).map(move |c| Region {
                r0: r,
                r1: r + 1,
                c0: c,
                c1: c + 1,
            })
        })
        .collect()
}

/// Owen values of each (channel, segment) on the partition's hierarchy by their definition
/// (every context of every split played), the ground truth of [`explain_segments`] at a full
/// budget; small grids only (the evaluations grow with players × 2^depth).
pub fn exact_owen_segments(
    model: &mut ModelFn<'_>,
    x: &[f32],
    segments: Segments,
    masker: Masker,
) -> Result<Vec<f64>, String> {
    let mut game = segment_game(model, x, segments, masker)?;
    crate::image::exact_owen_game(&mut game, segments.grid())
}

/// Bands explained at most: every coalition is played (2^bands evaluations).
pub const MAX_BANDS: usize = 12;

/// The model's output on the sum of the kept bands.
struct BandGame<'m, 'a> {
    model: &'m mut ModelFn<'a>,
    parts: Vec<Vec<f64>>,
    inputs: Vec<f32>,
}

impl Game for BandGame<'_, '_> {
    fn play(&mut self, coalitions: &[&Coalition]) -> Result<Vec<f64>, String> {
        let n = self.parts[0].len();
        self.inputs.clear();
        for coalition in coalitions {
            let kept: Vec<&Vec<f64>> = (0..self.parts.len())
                .filter(|&b| coalition.has(b))
                .map(|b| &self.parts[b])
                .collect();
            self.inputs
                .extend((0..n).map(|i| kept.iter().map(|p| p[i]).sum::<f64>() as f32));
        }
        (self.model)(&self.inputs, coalitions.len())
    }
}

/// The bands' exact Shapley values for window `x` (`channels` traces at `rate_hz`), lowest band
/// first; the background is the window with every band removed (a silent window).
pub fn explain_bands(
    model: &mut ModelFn<'_>,
    x: &[f32],
    channels: usize,
    rate_hz: f64,
    bands: &Bands,
    batch: usize,
) -> Result<Attribution, String> {
    if bands.len() > MAX_BANDS {
        return Err(format!(
            "{} bands: at most {MAX_BANDS} (every coalition of bands is played)",
            bands.len()
        ));
    }
    let parts = bands.split(x, channels, rate_hz)?;
    let grid = Shape {
        channels: 1,
        height: 1,
        width: bands.len(),
    };
    let mut game = BandGame {
        model,
        parts,
        inputs: Vec::new(),
    };
    let values = exact_shapley_game(&mut game, grid, &cells(grid), batch)?;
    let empty = Coalition::empty(grid.pixels());
    let all = empty.with(crate::image::Hierarchy::new(grid).root(), grid.width);
    let ends = game.play(&[&all, &empty])?;
    Ok(Attribution {
        values,
        f_image: ends[0],
        f_background: ends[1],
        evaluations: (1 << bands.len()) + 2,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::image::tests::{image, linear};

    fn window(channels: usize, samples: usize, seed: u64) -> Vec<f32> {
        let shape = Shape {
            channels,
            height: 1,
            width: samples,
        };
        image(shape, seed)
    }

    /// Products of segment energies across channels: interactions the hierarchy groups.
    fn interacting(s: Segments) -> impl FnMut(&[f32], usize) -> Result<Vec<f64>, String> {
        move |xs, n| {
            Ok(xs
                .chunks(xs.len() / n)
                .map(|x| {
                    let e = |c: usize, seg: usize| {
                        let (a, b) = s.bounds(seg);
                        x[c * s.samples + a..c * s.samples + b]
                            .iter()
                            .map(|v| (v * v) as f64)
                            .sum::<f64>()
                    };
                    (e(0, 0) * e(1, 1)).sqrt() + (e(2, 3) + e(0, 2)).tanh() - e(1, 0) * e(2, 2)
                })
                .collect())
        }
    }

    #[test]
    fn a_linear_model_gets_each_segments_own_term_and_each_bands_own_part() {
        let s = Segments::new(3, 40, 10).unwrap();
        let x = window(3, 40, 1);
        let w = window(3, 40, 2);
        let mut f = linear(w.clone());
        let a = explain_segments(&mut f, &x, s, Masker::Constant(0.0), 10_000, 8).unwrap();
        let exact = exact_segments(&mut f, &x, s, Masker::Constant(0.0), 64).unwrap();
        for c in 0..3 {
            for seg in 0..4 {
                let (lo, hi) = s.bounds(seg);
                let term: f64 = (lo..hi)
                    .map(|i| (x[c * 40 + i] * w[c * 40 + i]) as f64)
                    .sum();
                let i = c * 4 + seg;
                assert!((a.values[i] - term).abs() < 1e-5, "partition {c},{seg}");
                assert!((exact[i] - term).abs() < 1e-5, "exact {c},{seg}");
            }
        }
        let bands = Bands::new(vec![5.0, 20.0], 100.0).unwrap();
        let b = explain_bands(&mut f, &x, 3, 100.0, &bands, 4).unwrap();
        let parts = bands.split(&x, 3, 100.0).unwrap();
        for (k, p) in parts.iter().enumerate() {
            let term: f64 = p.iter().zip(&w).map(|(a, b)| a * *b as f64).sum();
            assert!((b.values[k] - term).abs() < 1e-4, "band {k}");
        }
        assert!(b.f_background.abs() < 1e-9 && b.additivity_error() < 1e-4);
        assert_eq!(b.evaluations, 10);
    }

    #[test]
    fn partition_values_are_the_owen_values_of_the_hierarchy_and_add_up() {
        let s = Segments::new(3, 48, 12).unwrap();
        let x = window(3, 48, 3);
        for masker in [
            Masker::Constant(0.0),
            Masker::ChannelMean,
            Masker::Blur { sigma: 3.0 },
        ] {
            let mut f = interacting(s);
            let full = explain_segments(&mut f, &x, s, masker, 100_000, 16).unwrap();
            assert!(full.additivity_error() < 1e-9, "{masker:?}");
            let want = exact_owen_segments(&mut f, &x, s, masker).unwrap();
            for (i, (got, want)) in full.values.iter().zip(&want).enumerate() {
                assert!(
                    (got - want).abs() < 1e-9,
                    "{masker:?} player {i}: {got} vs {want}"
                );
            }
            // A small budget still adds up; exact Shapley values of the same game are close.
            let mut f = interacting(s);
            let small = explain_segments(&mut f, &x, s, masker, 20, 4).unwrap();
            assert!(small.additivity_error() < 1e-9);
            let exact = exact_segments(&mut f, &x, s, masker, 256).unwrap();
            let total: f64 = exact.iter().sum();
            assert!((total - (full.f_image - full.f_background)).abs() < 1e-9);
            assert!(crate::image::correlation(&full.values, &exact) > 0.9);
        }
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        assert!(Segments::new(3, 100, 0).unwrap_err().contains("1 to 100"));
        assert!(Segments::new(3, 100, 101).is_err());
        let s = Segments::new(3, 100, 50).unwrap();
        let mut f = linear(vec![1.0; 300]);
        let e = explain_segments(&mut f, &[0.0; 299], s, Masker::Constant(0.0), 10, 1).unwrap_err();
        assert!(e.contains("299 values"), "{e}");
        let q = crate::image::Quantization::of_batch([&[0.0f32, 1.0][..]]).unwrap();
        let e = explain_segments(&mut f, &[0.0; 300], s, Masker::Inpaint(q), 10, 1).unwrap_err();
        assert!(e.contains("image masker"), "{e}");
        let many = Bands::new((1..13).map(|c| c as f64 * 3.0).collect(), 100.0).unwrap();
        let e = explain_bands(&mut f, &[0.0; 300], 3, 100.0, &many, 1).unwrap_err();
        assert!(e.contains("at most 12"), "{e}");
    }
}
