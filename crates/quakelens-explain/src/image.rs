//! Image SHAP, model-agnostic: a CHW image's pixels (all channels of a position together) are
//! players; a coalition keeps its pixels and replaces the others with a masked image.
//!
//! - [`Hierarchy`]: shap's Image-masker partition, halving the longer side of each region down
//!   to single pixels.
//! - [`partition`]: Owen values over that hierarchy under an evaluation budget, best-first.
//!   Each expanded region is evaluated with and without each half, in both contexts of its
//!   sibling, so the attributions always add up to f(x) − f(masked); whatever is not expanded
//!   when the budget runs out shares its value evenly over its pixels.
//! - [`exact_shapley`]: Shapley values of a small game (≤ 20 groups of pixels), every
//!   coalition evaluated: the ground truth the partition explainer is measured against.
//! - [`expected_gradients`]: GradientSHAP (expected gradients) from a model's input gradients:
//!   the mean over samples of (x − b) · ∇f(b + α(x − b)), baselines b, α uniform in [0, 1].
//!
//! The model is a closure from a batch of images (row-major, `n × C × H × W`) to one output each,
//! or the reason it could not evaluate them (returned as is).

use std::collections::BinaryHeap;

use crate::inpaint::fill_with_channel_means;
pub use crate::inpaint::{Inpainted, Quantization};

/// An image's shape: channels, height (frequency), width (time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl Shape {
    pub fn pixels(&self) -> usize {
        self.height * self.width
    }
    pub fn len(&self) -> usize {
        self.channels * self.pixels()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a removed pixel becomes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Masker {
    /// One value everywhere (e.g. 0 for standardised inputs).
    Constant(f32),
    /// Each channel's mean over the image.
    ChannelMean,
    /// The image blurred per channel with a Gaussian of this many pixels (σ). shap's
    /// `blur(k, k)` uses OpenCV's box-normalised kernels on the uint8-converted image; this
    /// blurs the float image itself, so no information is lost to quantisation.
    Blur { sigma: f32 },
    /// The study's masker, shap's `Image("inpaint_telea", …)`: the image quantised to 8 bits
    /// on its batch's range, removed pixels inpainted from the kept ones (every coalition has
    /// its own fill), the model fed the result on the batch's scale.
    Inpaint(Quantization),
}

impl Masker {
    /// The fully masked image for `x`.
    pub fn background(&self, x: &[f32], shape: Shape) -> Vec<f32> {
        match *self {
            Masker::Constant(v) => vec![v; x.len()],
            Masker::ChannelMean => x
                .chunks(shape.pixels())
                .flat_map(|c| {
                    let m = c.iter().map(|&v| v as f64).sum::<f64>() / c.len().max(1) as f64;
                    std::iter::repeat_n(m as f32, c.len())
                })
                .collect(),
            Masker::Blur { sigma } => blur(x, shape, sigma),
            Masker::Inpaint(q) => {
                let mut bytes = q.quantize(x, shape);
                fill_with_channel_means(&mut bytes);
                let mut out = Vec::with_capacity(x.len());
                q.dequantize(&bytes, shape, &mut out);
                out
            }
        }
    }

    /// The game of `model` around `x` with this masker.
    pub fn game<'m, 'a>(
        &self,
        model: &'m mut ModelFn<'a>,
        x: &'m [f32],
        shape: Shape,
    ) -> Box<dyn Game + 'm>
    where
        'a: 'm,
    {
        match *self {
            Masker::Inpaint(q) => Box::new(Inpainted::new(model, x, shape, q)),
            _ => Box::new(Composed::new(model, x, self.background(x, shape), shape)),
        }
    }
}

/// Separable Gaussian blur per channel, edges clamped.
fn blur(x: &[f32], shape: Shape, sigma: f32) -> Vec<f32> {
    let radius = (3.0 * sigma).ceil().max(1.0) as isize;
    let kernel: Vec<f32> = (-radius..=radius)
        .map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let norm: f32 = kernel.iter().sum();
    let (h, w) = (shape.height as isize, shape.width as isize);
    let mut out = vec![0.0; x.len()];
    let mut tmp = vec![0.0; shape.pixels()];
    for (c, img) in x.chunks(shape.pixels()).enumerate() {
        for r in 0..h {
            for col in 0..w {
                let mut s = 0.0;
                for (k, kv) in kernel.iter().enumerate() {
                    let cc = (col + k as isize - radius).clamp(0, w - 1);
                    s += kv * img[(r * w + cc) as usize];
                }
                tmp[(r * w + col) as usize] = s / norm;
            }
        }
        let dst = &mut out[c * shape.pixels()..(c + 1) * shape.pixels()];
        for r in 0..h {
            for col in 0..w {
                let mut s = 0.0;
                for (k, kv) in kernel.iter().enumerate() {
                    let rr = (r + k as isize - radius).clamp(0, h - 1);
                    s += kv * tmp[(rr * w + col) as usize];
                }
                dst[(r * w + col) as usize] = s / norm;
            }
        }
    }
    out
}

/// A region of pixel rows `r0..r1` × columns `c0..c1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub r0: usize,
    pub r1: usize,
    pub c0: usize,
    pub c1: usize,
}

impl Region {
    pub fn pixels(&self) -> usize {
        (self.r1 - self.r0) * (self.c1 - self.c0)
    }

    /// The two halves of the longer side (rows on a tie), or `None` for a single pixel.
    pub fn halves(&self) -> Option<(Region, Region)> {
        let (h, w) = (self.r1 - self.r0, self.c1 - self.c0);
        if h * w <= 1 {
            return None;
        }
        Some(if h >= w {
            let m = self.r0 + h / 2;
            (Region { r1: m, ..*self }, Region { r0: m, ..*self })
        } else {
            let m = self.c0 + w / 2;
            (Region { c1: m, ..*self }, Region { c0: m, ..*self })
        })
    }
}

/// The partition tree: the whole image, halved recursively.
pub struct Hierarchy {
    pub shape: Shape,
}

impl Hierarchy {
    pub fn new(shape: Shape) -> Self {
        Self { shape }
    }

    pub fn root(&self) -> Region {
        Region {
            r0: 0,
            r1: self.shape.height,
            c0: 0,
            c1: self.shape.width,
        }
    }

    /// The regions `levels` halvings below the root (2^levels of them, fewer where a region
    /// is a single pixel already), left to right.
    pub fn level(&self, levels: usize) -> Vec<Region> {
        let mut out = vec![self.root()];
        for _ in 0..levels {
            out = out
                .into_iter()
                .flat_map(|r| match r.halves() {
                    Some((a, b)) => vec![a, b],
                    None => vec![r],
                })
                .collect();
        }
        out
    }
}

/// A model: a batch of `n` images back to back → one output each, or why it failed.
pub type ModelFn<'a> = dyn FnMut(&[f32], usize) -> Result<Vec<f64>, String> + 'a;

/// A coalition of pixels (the ones whose window values are kept) as a bitmap: bit
/// `row · W + col`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Coalition(Vec<u64>);

impl Coalition {
    pub fn empty(pixels: usize) -> Self {
        Coalition(vec![0; pixels.div_ceil(64)])
    }
    pub fn words(&self) -> &[u64] {
        &self.0
    }
    pub fn with(&self, r: Region, width: usize) -> Self {
        let mut m = self.clone();
        for row in r.r0..r.r1 {
            for col in r.c0..r.c1 {
                let p = row * width + col;
                m.0[p / 64] |= 1 << (p % 64);
            }
        }
        m
    }
    pub fn has(&self, p: usize) -> bool {
        self.0[p / 64] >> (p % 64) & 1 == 1
    }
}

/// The game the explainers play: a model's output for each coalition of pixels, the others
/// masked. [`Composed`] builds the images and calls a model on them; a model that knows its
/// own structure can do better (the CNN recomputes only what a coalition changes, see
/// `quakelens_models::cnn::MaskedCnn`).
pub trait Game {
    fn play(&mut self, coalitions: &[&Coalition]) -> Result<Vec<f64>, String>;

    /// The outputs for coalitions that each add one region to a coalition played before
    /// (`(before, after, region)`): a game that keeps what it computed can redo only what the
    /// region reaches. By default, plays the `after`s.
    fn play_steps(
        &mut self,
        steps: &[(&Coalition, &Coalition, Region)],
    ) -> Result<Vec<f64>, String> {
        self.play(&steps.iter().map(|(_, after, _)| *after).collect::<Vec<_>>())
    }
}

/// Any model as a [`Game`]: masked images composed from the window and the background.
pub struct Composed<'m, 'a> {
    model: &'m mut ModelFn<'a>,
    x: &'m [f32],
    background: Vec<f32>,
    shape: Shape,
    images: Vec<f32>,
}

impl<'m, 'a> Composed<'m, 'a> {
    pub fn new(
        model: &'m mut ModelFn<'a>,
        x: &'m [f32],
        background: Vec<f32>,
        shape: Shape,
    ) -> Self {
        Self {
            model,
            x,
            background,
            shape,
            images: Vec::new(),
        }
    }
}

impl Game for Composed<'_, '_> {
    fn play(&mut self, coalitions: &[&Coalition]) -> Result<Vec<f64>, String> {
        self.images.clear();
        for c in coalitions {
            compose(self.x, &self.background, c, self.shape, &mut self.images);
        }
        (self.model)(&self.images, coalitions.len())
    }
}

impl Game for quakelens_models::cnn::MaskedCnn<'_> {
    fn play(&mut self, coalitions: &[&Coalition]) -> Result<Vec<f64>, String> {
        let words: Vec<&[u64]> = coalitions.iter().map(|c| c.words()).collect();
        self.margins(&words)
            .map_err(|e| format!("CNN on masked images: {e}"))
    }

    fn play_steps(
        &mut self,
        steps: &[(&Coalition, &Coalition, Region)],
    ) -> Result<Vec<f64>, String> {
        let steps: Vec<quakelens_models::cnn::Step<'_>> = steps
            .iter()
            .map(|(before, after, r)| quakelens_models::cnn::Step {
                parent: before.words(),
                child: after.words(),
                rows: (r.r0, r.r1),
                cols: (r.c0, r.c1),
            })
            .collect();
        self.margins_steps(&steps)
            .map_err(|e| format!("CNN on masked images: {e}"))
    }
}

/// Runs `explain` on the game of `model`'s output `Σ output[k] · logit_k` (the margin is
/// `[-1, 1]`) around window `x`: the locally recomputing
/// [`quakelens_models::cnn::MaskedCnn`] for native models, composed images for TorchScript ones
/// and for the inpainting masker (whose fill differs from coalition to coalition).
pub fn with_cnn_game<T>(
    model: &quakelens_models::cnn::CnnModel,
    x: &[f32],
    shape: Shape,
    masker: Masker,
    output: &[f64],
    explain: impl FnOnce(&mut dyn Game) -> Result<T, String>,
) -> Result<T, String> {
    if !matches!(masker, Masker::Inpaint(_)) {
        let background = masker.background(x, shape);
        if let Some(mut game) = model
            .masked(x, &background, output)
            .map_err(|e| e.to_string())?
        {
            return explain(&mut game);
        }
    }
    let mut f = |images: &[f32], n: usize| -> Result<Vec<f64>, String> {
        model
            .outputs(images, n, output)
            .map_err(|e| format!("CNN on masked images: {e}"))
    };
    let mut game = masker.game(&mut f, x, shape);
    explain(game.as_mut())
}

/// `x` where `mask` holds the pixel, `background` elsewhere, appended to `out`.
fn compose(x: &[f32], background: &[f32], mask: &Coalition, shape: Shape, out: &mut Vec<f32>) {
    let n = shape.pixels();
    for c in 0..shape.channels {
        for p in 0..n {
            let i = c * n + p;
            out.push(if mask.has(p) { x[i] } else { background[i] });
        }
    }
}

/// One region to split, in one context: `off` lacks it, `on` = `off` + the region.
struct Item {
    priority: f64,
    region: Region,
    weight: f64,
    off: Coalition,
    f_off: f64,
    f_on: f64,
}

impl PartialEq for Item {
    fn eq(&self, o: &Self) -> bool {
        self.priority == o.priority
    }
}
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Item {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.priority.total_cmp(&o.priority)
    }
}

/// Result of an explanation: one value per position (all channels share their pixel's value
/// split evenly), the model at the image and at the fully masked image, evaluations used.
#[derive(Clone, Debug)]
pub struct Attribution {
    /// `C × H × W`, each pixel's value split evenly over its channels.
    pub values: Vec<f64>,
    pub f_image: f64,
    pub f_background: f64,
    pub evaluations: usize,
}

impl Attribution {
    /// |Σ values − (f(x) − f(background))|.
    pub fn additivity_error(&self) -> f64 {
        (self.values.iter().sum::<f64>() - (self.f_image - self.f_background)).abs()
    }
}

/// Owen values over the [`Hierarchy`] with at most `max_evals` model evaluations, `batch`
/// regions expanded per model call.
pub fn partition(
    model: &mut ModelFn<'_>,
    x: &[f32],
    shape: Shape,
    masker: Masker,
    max_evals: usize,
    batch: usize,
) -> Result<Attribution, String> {
    partition_game(
        masker.game(model, x, shape).as_mut(),
        shape,
        max_evals,
        batch,
    )
}

/// [`partition`] on any [`Game`] over an image of `shape`.
pub fn partition_game(
    game: &mut dyn Game,
    shape: Shape,
    max_evals: usize,
    batch: usize,
) -> Result<Attribution, String> {
    partition_part(game, shape, max_evals, batch, Part::WHOLE)
}

pub use quakelens_records::Part;

/// Expands each (item, halves): evaluates the item's context with each half added and returns
/// the four children (each half without and with its sibling), two evaluations per item.
fn expand(
    game: &mut dyn Game,
    shape: Shape,
    work: Vec<(Item, (Region, Region))>,
) -> Result<Vec<Item>, String> {
    let masks: Vec<(Coalition, Coalition)> = work
        .iter()
        .map(|(item, (a, b))| {
            (
                item.off.with(*a, shape.width),
                item.off.with(*b, shape.width),
            )
        })
        .collect();
    let steps: Vec<(&Coalition, &Coalition, Region)> = work
        .iter()
        .zip(&masks)
        .flat_map(|((item, (a, b)), (with_a, with_b))| {
            [(&item.off, with_a, *a), (&item.off, with_b, *b)]
        })
        .collect();
    let f = game.play_steps(&steps)?;
    let mut children = Vec::with_capacity(4 * work.len());
    for (i, ((item, (a, b)), (with_a, with_b))) in work.into_iter().zip(masks).enumerate() {
        let (f_a, f_b) = (f[2 * i], f[2 * i + 1]);
        let w = item.weight / 2.0;
        for (region, off, f_off, f_on) in [
            (a, item.off.clone(), item.f_off, f_a),
            (a, with_b.clone(), f_b, item.f_on),
            (b, item.off.clone(), item.f_off, f_b),
            (b, with_a.clone(), f_a, item.f_on),
        ] {
            children.push(Item {
                priority: (w * (f_on - f_off)).abs(),
                region,
                weight: w,
                off,
                f_off,
                f_on,
            });
        }
    }
    Ok(children)
}

/// [`partition_game`] for one [`Part`] of the window; `max_evals` is the whole window's budget.
pub fn partition_part(
    game: &mut dyn Game,
    shape: Shape,
    max_evals: usize,
    batch: usize,
    part: Part,
) -> Result<Attribution, String> {
    if part.count == 0 || part.index >= part.count {
        return Err(format!(
            "part {} of {} does not exist",
            part.index, part.count
        ));
    }
    let hierarchy = Hierarchy::new(shape);
    let n = shape.pixels();
    let everything = Coalition::empty(n).with(hierarchy.root(), shape.width);
    let f = game.play(&[&everything, &Coalition::empty(n)])?;
    let (f_image, f_background) = (f[0], f[1]);
    let mut evaluations = 2;
    let mut per_pixel = vec![0.0f64; n];
    let spread = |per_pixel: &mut [f64], item: &Item| {
        let r = item.region;
        let share = item.weight * (item.f_on - item.f_off) / r.pixels() as f64;
        for row in r.r0..r.r1 {
            for col in r.c0..r.c1 {
                per_pixel[row * shape.width + col] += share;
            }
        }
    };
    let mut items = vec![Item {
        priority: (f_image - f_background).abs(),
        region: hierarchy.root(),
        weight: 1.0,
        off: Coalition::empty(n),
        f_off: f_background,
        f_on: f_image,
    }];
    for _ in 0..part.shared_levels() {
        let mut work = Vec::new();
        for item in items {
            match item.region.halves() {
                Some(h) => work.push((item, h)),
                // A single pixel this high up (tiny images): part 0 keeps its value.
                None if part.index == 0 => spread(&mut per_pixel, &item),
                None => {}
            }
        }
        evaluations += 2 * work.len();
        items = expand(game, shape, work)?;
    }
    let shared = evaluations;
    let budget = shared + max_evals.saturating_sub(shared) / part.count;
    let mut queue: BinaryHeap<Item> = items
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % part.count == part.index)
        .map(|(_, item)| item)
        .collect();
    let batch = batch.max(1);
    while !queue.is_empty() {
        let room = budget.saturating_sub(evaluations) / 2;
        if room == 0 {
            break;
        }
        let mut work = Vec::new();
        while work.len() < batch.min(room) {
            let Some(item) = queue.pop() else { break };
            match item.region.halves() {
                Some(h) => work.push((item, h)),
                None => spread(&mut per_pixel, &item),
            }
        }
        if work.is_empty() {
            continue;
        }
        evaluations += 2 * work.len();
        queue.extend(expand(game, shape, work)?);
    }
    for item in queue.drain() {
        spread(&mut per_pixel, &item);
    }
    let c = shape.channels as f64;
    let values = (0..shape.channels)
        .flat_map(|_| per_pixel.iter().map(move |v| v / c))
        .collect();
    Ok(Attribution {
        values,
        f_image,
        f_background,
        evaluations,
    })
}

/// Exact Shapley values of the game whose players are `groups` of pixels (≤ 20): every
/// coalition is evaluated, `batch` images per model call.
pub fn exact_shapley(
    model: &mut ModelFn<'_>,
    x: &[f32],
    shape: Shape,
    masker: Masker,
    groups: &[Region],
    batch: usize,
) -> Result<Vec<f64>, String> {
    exact_shapley_game(masker.game(model, x, shape).as_mut(), shape, groups, batch)
}

/// [`exact_shapley`] on any [`Game`] over an image of `shape`.
pub fn exact_shapley_game(
    game: &mut dyn Game,
    shape: Shape,
    groups: &[Region],
    batch: usize,
) -> Result<Vec<f64>, String> {
    let p = groups.len();
    if p > 20 {
        return Err(format!(
            "exact Shapley values need at most 20 players, got {p}"
        ));
    }
    let coalitions = 1usize << p;
    let mut v = vec![0.0; coalitions];
    let batch = batch.max(1);
    let mut start = 0;
    while start < coalitions {
        let end = (start + batch).min(coalitions);
        let masks: Vec<Coalition> = (start..end)
            .map(|s| {
                groups
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| s >> i & 1 == 1)
                    .fold(Coalition::empty(shape.pixels()), |m, (_, g)| {
                        m.with(*g, shape.width)
                    })
            })
            .collect();
        let f = game.play(&masks.iter().collect::<Vec<_>>())?;
        v[start..end].copy_from_slice(&f);
        start = end;
    }
    // w(k) = k! (p − k − 1)! / p!
    let mut w = vec![0.0; p];
    for (k, wk) in w.iter_mut().enumerate() {
        let mut x = 1.0 / p as f64;
        // 1 / (p · C(p−1, k))
        for j in 0..k {
            x *= (j + 1) as f64 / (p - 1 - j) as f64;
        }
        *wk = x;
    }
    Ok((0..p)
        .map(|i| {
            (0..coalitions)
                .filter(|s| s >> i & 1 == 0)
                .map(|s| w[(s as u32).count_ones() as usize] * (v[s | 1 << i] - v[s]))
                .sum()
        })
        .collect())
}

/// Owen values over the [`Hierarchy`] by their definition: at each split a region's sibling is
/// absent or present with weight ½ each, down to single pixels, every context played. What
/// [`partition_game`] reaches with a budget that expands everything; for small images only.
pub fn exact_owen_game(game: &mut dyn Game, shape: Shape) -> Result<Vec<f64>, String> {
    fn visit(
        game: &mut dyn Game,
        width: usize,
        region: Region,
        outside: &Coalition,
        weight: f64,
        out: &mut [f64],
    ) -> Result<(), String> {
        match region.halves() {
            None => {
                let with = outside.with(region, width);
                let v = game.play(&[&with, outside])?;
                out[region.r0 * width + region.c0] += weight * (v[0] - v[1]);
            }
            Some((a, b)) => {
                for (me, sibling) in [(a, b), (b, a)] {
                    visit(game, width, me, outside, weight / 2.0, out)?;
                    let with = outside.with(sibling, width);
                    visit(game, width, me, &with, weight / 2.0, out)?;
                }
            }
        }
        Ok(())
    }
    let mut out = vec![0.0; shape.pixels()];
    let root = Hierarchy::new(shape).root();
    visit(
        game,
        shape.width,
        root,
        &Coalition::empty(shape.pixels()),
        1.0,
        &mut out,
    )?;
    Ok(out)
}

/// Pearson correlation of two equally long value lists (fidelity against exact values).
pub fn correlation(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}

/// Per-pixel attributions (`C × H × W`) summed over each region, all channels: what a game
/// whose players are `regions` would give them.
pub fn region_sums(values: &[f64], shape: Shape, regions: &[Region]) -> Vec<f64> {
    let n = shape.pixels();
    regions
        .iter()
        .map(|r| {
            (r.r0..r.r1)
                .flat_map(|row| (r.c0..r.c1).map(move |col| row * shape.width + col))
                .map(|p| (0..shape.channels).map(|c| values[c * n + p]).sum::<f64>())
                .sum()
        })
        .collect()
}

/// A model's outputs and input gradients for a batch (gradients back to back like the images).
pub type GradientFn<'a> = dyn FnMut(&[f32], usize) -> Result<(Vec<f64>, Vec<f32>), String> + 'a;

/// Expected gradients with `samples` draws (cycling through `baselines`, each a whole image),
/// `batch` points per model call, a fixed `seed` so runs repeat. Additivity holds only in
/// expectation; [`Attribution::additivity_error`] says how far this estimate is (measured
/// against the mean baseline's output).
pub fn expected_gradients(
    gradients: &mut GradientFn<'_>,
    x: &[f32],
    baselines: &[f32],
    samples: usize,
    batch: usize,
    seed: u64,
) -> Result<Attribution, String> {
    let len = x.len();
    if len == 0 || baselines.is_empty() || !baselines.len().is_multiple_of(len) {
        return Err(format!(
            "baselines must be whole images of {len} values, got {}",
            baselines.len()
        ));
    }
    let n_base = baselines.len() / len;
    let mut state = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut uniform = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut phi = vec![0.0f64; len];
    let mut points = Vec::new();
    let mut drawn = Vec::new();
    let samples = samples.max(1);
    let batch = batch.max(1);
    let mut done = 0;
    while done < samples {
        let m = batch.min(samples - done);
        points.clear();
        drawn.clear();
        for s in 0..m {
            let b = &baselines[((done + s) % n_base) * len..][..len];
            let alpha = uniform() as f32;
            points.extend(x.iter().zip(b).map(|(xi, bi)| bi + alpha * (xi - bi)));
            drawn.push((done + s) % n_base);
        }
        let (_, grads) = gradients(&points, m)?;
        if grads.len() != m * len {
            return Err(format!(
                "{} gradient values for {m} images of {len}",
                grads.len()
            ));
        }
        for (s, &bi) in drawn.iter().enumerate() {
            let b = &baselines[bi * len..][..len];
            let g = &grads[s * len..][..len];
            for i in 0..len {
                phi[i] += ((x[i] - b[i]) * g[i]) as f64;
            }
        }
        done += m;
    }
    for v in &mut phi {
        *v /= samples as f64;
    }
    let mut ends = Vec::with_capacity(len * (1 + n_base));
    ends.extend_from_slice(x);
    ends.extend_from_slice(baselines);
    let (f, _) = gradients(&ends, 1 + n_base)?;
    let f_background = f[1..].iter().sum::<f64>() / n_base as f64;
    Ok(Attribution {
        values: phi,
        f_image: f[0],
        f_background,
        evaluations: samples + 1 + n_base,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const SMALL: Shape = Shape {
        channels: 3,
        height: 5,
        width: 7,
    };
    const FULL: Shape = Shape {
        channels: 3,
        height: 33,
        width: 153,
    };

    pub(crate) fn image(shape: Shape, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..shape.len())
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 33) as f32 / (1u64 << 31) as f32) - 0.5
            })
            .collect()
    }

    /// f = Σ w·x: every pixel's Shapley value is its own term.
    pub(crate) fn linear(w: Vec<f32>) -> impl FnMut(&[f32], usize) -> Result<Vec<f64>, String> {
        move |images, n| {
            Ok(images
                .chunks(images.len() / n)
                .map(|im| im.iter().zip(&w).map(|(a, b)| (a * b) as f64).sum())
                .collect())
        }
    }

    /// A model with saturation and interactions between distant regions.
    fn nonlinear(shape: Shape) -> impl FnMut(&[f32], usize) -> Result<Vec<f64>, String> {
        let w = image(shape, 7);
        let u = image(shape, 8);
        move |images, n| {
            Ok(images
                .chunks(images.len() / n)
                .map(|im| {
                    let a: f64 = im.iter().zip(&w).map(|(x, w)| (x * w) as f64).sum();
                    let b: f64 = im.iter().zip(&u).map(|(x, u)| (x * u) as f64).sum();
                    (a / 4.0).tanh() * 3.0 + 0.05 * a * b
                })
                .collect())
        }
    }

    #[test]
    fn model_errors_and_oversized_games_are_returned() {
        let x = image(SMALL, 1);
        let mut failing =
            |_: &[f32], _: usize| -> Result<Vec<f64>, String> { Err("no GPU".into()) };
        let err = partition(&mut failing, &x, SMALL, Masker::ChannelMean, 100, 8).unwrap_err();
        assert_eq!(err, "no GPU");
        let groups = Hierarchy::new(FULL).level(5);
        let mut ok = linear(image(FULL, 2));
        let err = exact_shapley(
            &mut ok,
            &image(FULL, 3),
            FULL,
            Masker::ChannelMean,
            &groups[..21],
            8,
        )
        .unwrap_err();
        assert!(err.contains("at most 20 players, got 21"), "{err}");
    }

    #[test]
    fn expected_gradients_of_a_linear_model_are_its_terms() {
        let w = image(SMALL, 3);
        let x = image(SMALL, 4);
        let baselines: Vec<f32> = [image(SMALL, 5), image(SMALL, 6)].concat();
        let mut grad = |images: &[f32], n: usize| -> Result<(Vec<f64>, Vec<f32>), String> {
            let f = images
                .chunks(images.len() / n)
                .map(|im| im.iter().zip(&w).map(|(a, b)| (a * b) as f64).sum())
                .collect();
            Ok((f, w.iter().copied().cycle().take(images.len()).collect()))
        };
        // An even number of samples weights both baselines equally: exact for a linear model.
        let a = expected_gradients(&mut grad, &x, &baselines, 40, 7, 1).unwrap();
        let n = SMALL.len();
        for i in 0..n {
            let want =
                w[i] as f64 * (x[i] as f64 - (baselines[i] as f64 + baselines[n + i] as f64) / 2.0);
            assert!(
                (a.values[i] - want).abs() < 1e-6,
                "{i}: {} vs {want}",
                a.values[i]
            );
        }
        assert!(a.additivity_error() < 1e-5, "{}", a.additivity_error());
        assert!(expected_gradients(&mut grad, &x, &baselines[..5], 4, 2, 1).is_err());
    }

    #[test]
    fn hierarchy_halves_the_longer_side_down_to_pixels() {
        let h = Hierarchy::new(FULL);
        let level = h.level(4);
        assert_eq!(level.len(), 16);
        assert_eq!(level.iter().map(Region::pixels).sum::<usize>(), 33 * 153);
        // 153 columns are halved first (153 > 33), then 76 > 33 and 38 > 33, then 33 rows ≥ 19.
        assert_eq!(
            level[0],
            Region {
                r0: 0,
                r1: 16,
                c0: 0,
                c1: 19
            }
        );
        let mut r = h.root();
        let mut splits = 0;
        while let Some((a, _)) = r.halves() {
            r = a;
            splits += 1;
        }
        assert_eq!((r.pixels(), splits), (1, 12));
    }

    #[test]
    fn linear_model_gets_its_own_terms_with_enough_budget() {
        let w = image(SMALL, 3);
        let x = image(SMALL, 4);
        let masker = Masker::Constant(0.25);
        let got = partition(&mut linear(w.clone()), &x, SMALL, masker, 100_000, 16).unwrap();
        let n = SMALL.pixels();
        for p in 0..n {
            let want: f64 = (0..3)
                .map(|c| (w[c * n + p] * (x[c * n + p] - 0.25)) as f64)
                .sum();
            let have: f64 = (0..3).map(|c| got.values[c * n + p]).sum();
            // The model sums f32 products: agreement to f32 rounding.
            assert!((have - want).abs() < 1e-6, "pixel {p}: {have} vs {want}");
        }
        let exact = exact_shapley(
            &mut linear(w.clone()),
            &x,
            SMALL,
            masker,
            &Hierarchy::new(SMALL).level(2),
            64,
        )
        .unwrap();
        for (r, got) in Hierarchy::new(SMALL).level(2).iter().zip(&exact) {
            let want: f64 = (r.r0..r.r1)
                .flat_map(|row| (r.c0..r.c1).map(move |col| row * SMALL.width + col))
                .flat_map(|p| (0..3).map(move |c| c * n + p))
                .map(|i| (w[i] * (x[i] - 0.25)) as f64)
                .sum();
            assert!((got - want).abs() < 1e-6, "{r:?}: {got} vs {want}");
        }
    }

    #[test]
    fn parts_add_up_to_the_window_and_spread_the_budget() {
        let x = image(FULL, 11);
        let masker = Masker::Blur { sigma: 2.0 };
        let bg = masker.background(&x, FULL);
        let mut model = nonlinear(FULL);
        let mut game = Composed::new(&mut model, &x, bg, FULL);
        let whole = partition_game(&mut game, FULL, 1200, 32).unwrap();
        let one = partition_part(&mut game, FULL, 1200, 32, Part::WHOLE).unwrap();
        assert_eq!(
            one.values, whole.values,
            "one part is the whole explanation"
        );
        for count in [2, 3, 5] {
            let parts: Vec<Attribution> = (0..count)
                .map(|index| {
                    partition_part(&mut game, FULL, 1200, 32, Part { index, count }).unwrap()
                })
                .collect();
            let total: Vec<f64> = (0..FULL.len())
                .map(|i| parts.iter().map(|p| p.values[i]).sum())
                .collect();
            let merged = Attribution {
                values: total,
                f_image: parts[0].f_image,
                f_background: parts[0].f_background,
                evaluations: parts.iter().map(|p| p.evaluations).sum(),
            };
            let scale = (merged.f_image - merged.f_background).abs();
            assert!(
                merged.additivity_error() <= 1e-9 * scale.max(1.0),
                "{count} parts"
            );
            // Each part covers its own items: no part is empty, and the budget is shared.
            assert!(parts.iter().all(|p| p.values.iter().any(|v| *v != 0.0)));
            let shared = if count <= 4 { 4 } else { 12 };
            assert!(
                merged.evaluations <= 1200 + (count - 1) * shared,
                "{count} parts used {}",
                merged.evaluations
            );
            // The split explains about as well as one task: the values agree closely.
            let r = correlation(&merged.values, &whole.values);
            assert!(r > 0.9, "{count} parts: correlation {r} with the whole");
        }
        assert!(partition_part(&mut game, FULL, 100, 8, Part { index: 2, count: 2 }).is_err());
    }

    #[test]
    fn attributions_add_up_whatever_the_budget_and_masker() {
        let x = image(FULL, 5);
        for masker in [
            Masker::Constant(0.0),
            Masker::ChannelMean,
            Masker::Blur { sigma: 2.0 },
        ] {
            for budget in [2, 10, 200, 1000] {
                let a = partition(&mut nonlinear(FULL), &x, FULL, masker, budget, 32).unwrap();
                assert!(
                    a.evaluations <= budget.max(2),
                    "{} > {budget}",
                    a.evaluations
                );
                let scale = (a.f_image - a.f_background).abs().max(1e-12);
                assert!(
                    a.additivity_error() <= 1e-9 * scale.max(1.0),
                    "{masker:?} {budget}: {}",
                    a.additivity_error()
                );
            }
        }
    }

    /// The partition explainer at its default budget against exact Shapley values of 16
    /// super-patches (the hierarchy's fourth level), on a model with interactions.
    #[test]
    fn partition_values_correlate_with_exact_super_patch_values() {
        let groups = Hierarchy::new(FULL).level(4);
        for seed in [11, 12, 13] {
            let x = image(FULL, seed);
            let masker = Masker::ChannelMean;
            let exact =
                exact_shapley(&mut nonlinear(FULL), &x, FULL, masker, &groups, 512).unwrap();
            let total: f64 = exact.iter().sum();
            let a = partition(&mut nonlinear(FULL), &x, FULL, masker, 1000, 64).unwrap();
            assert!((total - (a.f_image - a.f_background)).abs() < 1e-9);
            let corr = correlation(&exact, &region_sums(&a.values, FULL, &groups));
            assert!(corr >= 0.95, "seed {seed}: correlation {corr}");
        }
    }
}
