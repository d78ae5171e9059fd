//! The CNN on images that mix a window with its masked background pixel by pixel: what an
//! image SHAP explainer asks for, a thousand times per window.
//!
//! Two locality shortcuts, both exact:
//! - The first convolution dominates a forward pass (three input channels at full resolution,
//!   32 output maps), and a cell of its pooled map sees only a 4 × 4 patch of input pixels. A
//!   cell whose patch lies wholly in the window or wholly in the background is copied from two
//!   maps computed once; only cells on a coalition's edge are computed, all of a batch's in one
//!   matrix product.
//! - A partition explainer's coalition adds one rectangle to a coalition it evaluated before.
//!   The later layers then change only in the columns (frames) that rectangle reaches, so
//!   [`MaskedCnn::margins_steps`] recomputes conv2 and conv3 in those columns alone, on top of
//!   the earlier coalition's cached activations, and runs the dense layers on the result.

use std::cell::RefCell;
use std::collections::HashMap;

use tch::{Device, Tensor};

use super::arch::{feature_map, FoldedCnn2d};
use super::{read_f32, CnnError};

/// Input rows (and columns) one pooled first-layer cell sees: a 2 × 2 pooling window of 3 × 3
/// convolutions.
const PATCH: usize = 4;
/// Coalitions whose deeper activations are kept for the coalitions that extend them (about
/// 66 kB each for the study's CNN).
const CACHED: usize = 2048;

/// A coalition that adds input columns `cols` (a rectangle's, all rows counted) to `parent`.
pub struct Step<'c> {
    pub parent: &'c [u64],
    pub child: &'c [u64],
    pub cols: (usize, usize),
}

/// conv2 and conv3 activations of one coalition, column-major (`[col][channel][row]`) with
/// zero columns around them (2 each side for conv2's, 1 for conv3's): what a column band is
/// cut from and pasted into.
struct Deep {
    a2: Tensor,
    a3: Tensor,
}

/// How a pooled first-layer cell of a coalition is computed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cell {
    Window,
    Background,
    Edge,
}

/// First-layer cells of a batch being assembled: which are wholly in the window, and the index
/// and input patch of each cell on a coalition's edge.
#[derive(Default)]
struct Assembly {
    whole: Vec<bool>,
    edge_cells: Vec<i64>,
    patches: Vec<f32>,
}

/// A window and its background, ready to evaluate coalitions of pixels.
pub struct MaskedCnn<'a> {
    net: &'a FoldedCnn2d,
    device: Device,
    channels: usize,
    height: usize,
    width: usize,
    filters: usize,
    /// conv2/conv3 channels and the rows × columns of their maps.
    deep: (i64, i64, i64, i64),
    /// Standardised window and background, `C × H × W`.
    window: Vec<f32>,
    background: Vec<f32>,
    /// First-layer maps of the whole window and the whole background, `[H/2, W/2, filters]`,
    /// and the same with a zero column on each side (for column bands).
    first_window: Tensor,
    first_background: Tensor,
    first_window_padded: Tensor,
    first_background_padded: Tensor,
    /// conv1 on one 4 × 4 patch as a matrix `[C·16, 4·filters]` (the four convolutions under a
    /// pooling window side by side), and its bias `[filters]`.
    patch_weights: Tensor,
    bias: Tensor,
    /// fc1's weight with its inputs in the column-major order of [`Deep::a3`].
    fc1_by_column: Tensor,
    cache: RefCell<HashMap<Vec<u64>, Deep>>,
}

impl<'a> MaskedCnn<'a> {
    pub(crate) fn new(
        net: &'a FoldedCnn2d,
        device: Device,
        window: &[f32],
        background: &[f32],
    ) -> Result<Self, CnnError> {
        let _guard = tch::no_grad_guard();
        let [c, h, w] = net.input_shape();
        let (channels, height, width) = (c as usize, h as usize, w as usize);
        let standardized = |x: &[f32]| {
            net.standardize(&Tensor::from_slice(x).view([1, c, h, w]).to_device(device))
        };
        let (xs, bs) = (standardized(window), standardized(background));
        let first = |t: &Tensor| {
            net.first_layer(t)
                .squeeze_dim(0)
                .permute([1, 2, 0])
                .contiguous()
        };
        let padded = |t: &Tensor| t.constant_pad_nd([0, 0, 1, 1]).contiguous();
        let (rows, cols) = feature_map(h, w);
        let c2 = net.conv(1).0.size()[0];
        let c3 = net.conv(2).0.size()[0];
        let [(w1, _), _] = net.head();
        let fc1_by_column = w1
            .view([w1.size()[0], c3, rows, cols])
            .permute([0, 3, 1, 2])
            .reshape([w1.size()[0], cols * c3 * rows]);
        let (weight, bias) = net.first_conv();
        let filters = weight.size()[0] as usize;
        let w = read_f32(weight, "reading conv1 weights")?;
        // Row (ci, pr, pc) of the patch, column (position dr·2+dc, filter co).
        let mut big = vec![0f32; channels * PATCH * PATCH * 4 * filters];
        for ci in 0..channels {
            for pr in 0..PATCH {
                for pc in 0..PATCH {
                    let row = (ci * PATCH + pr) * PATCH + pc;
                    for (dr, dc) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                        let (Some(kr), Some(kc)) = (pr.checked_sub(dr), pc.checked_sub(dc)) else {
                            continue;
                        };
                        if kr > 2 || kc > 2 {
                            continue;
                        }
                        for co in 0..filters {
                            big[row * 4 * filters + (dr * 2 + dc) * filters + co] =
                                w[((co * channels + ci) * 3 + kr) * 3 + kc];
                        }
                    }
                }
            }
        }
        let (first_window, first_background) = (first(&xs), first(&bs));
        Ok(Self {
            net,
            device,
            channels,
            height,
            width,
            filters,
            deep: (c2, c3, rows, cols),
            window: read_f32(&xs, "standardising the window")?,
            background: read_f32(&bs, "standardising the background")?,
            first_window_padded: padded(&first_window),
            first_background_padded: padded(&first_background),
            first_window,
            first_background,
            patch_weights: Tensor::from_slice(&big)
                .view([(channels * PATCH * PATCH) as i64, (4 * filters) as i64])
                .to_device(device),
            bias: bias.view([1, 1, filters as i64]),
            fc1_by_column,
            cache: RefCell::new(HashMap::new()),
        })
    }

    /// Words of a coalition bitset: bit `row · W + col` set keeps the window's pixel there.
    pub fn words(&self) -> usize {
        (self.height * self.width).div_ceil(64)
    }

    /// The aftershock-minus-foreshock margin for each coalition.
    pub fn margins(&self, coalitions: &[&[u64]]) -> Result<Vec<f64>, CnnError> {
        self.check(coalitions.iter().copied())?;
        self.full(coalitions, false)
    }

    /// The margin of each step's child coalition. A step whose parent was evaluated before
    /// (through this method, or as a step's child) recomputes conv2 and conv3 only in the
    /// columns the added region reaches; the values equal [`MaskedCnn::margins`]'.
    pub fn margins_steps(&self, steps: &[Step<'_>]) -> Result<Vec<f64>, CnnError> {
        self.check(steps.iter().flat_map(|s| [s.parent, s.child]))?;
        if steps.is_empty() {
            return Ok(Vec::new());
        }
        // Parents not seen yet (the empty coalition, say) are evaluated once first.
        let mut missing: Vec<&[u64]> = {
            let cache = self.cache.borrow();
            steps
                .iter()
                .map(|s| s.parent)
                .filter(|p| !cache.contains_key(*p))
                .collect()
        };
        missing.sort();
        missing.dedup();
        if !missing.is_empty() {
            self.full(&missing, true)?;
            let cache = self.cache.borrow();
            if steps.iter().any(|s| !cache.contains_key(s.parent)) {
                // The cache is full: whole passes for this batch.
                drop(cache);
                let children: Vec<&[u64]> = steps.iter().map(|s| s.child).collect();
                return self.full(&children, false);
            }
        }
        // Steps whose regions reach few columns are not made to compute a wide band: the
        // batch is cut into groups of similar width.
        let widths: Vec<usize> = steps.iter().map(|s| self.band_width(s.cols)).collect();
        let mut order: Vec<usize> = (0..steps.len()).collect();
        order.sort_by_key(|&i| widths[i]);
        let mut out = vec![0.0; steps.len()];
        for group in
            order.chunk_by(|&a, &b| Self::width_class(widths[a]) == Self::width_class(widths[b]))
        {
            let part: Vec<Step<'_>> = group
                .iter()
                .map(|&i| Step {
                    parent: steps[i].parent,
                    child: steps[i].child,
                    cols: steps[i].cols,
                })
                .collect();
            for (&i, m) in group.iter().zip(self.banded(&part)?) {
                out[i] = m;
            }
        }
        Ok(out)
    }

    /// Groups of band widths computed together (a band is as wide as its group's widest).
    fn width_class(width: usize) -> usize {
        match width {
            0..=2 => 0,
            3..=4 => 1,
            5..=8 => 2,
            _ => 3,
        }
    }

    /// conv2 columns (first, last) that adding input columns `cols` can change: pooled
    /// first-layer cells see input columns 2j−1..2j+2, conv2's pooled columns see first-layer
    /// columns 4q−1..4q+3.
    fn reach(&self, (c0, c1): (usize, usize)) -> (usize, usize) {
        let (pw, q) = (self.width / 2, self.deep.3 as usize);
        let j_lo = c0.saturating_sub(2).div_ceil(2);
        let j_hi = (c1 / 2).min(pw - 1);
        let q_lo = j_lo.saturating_sub(3).div_ceil(4).min(q - 1);
        let q_hi = ((j_hi + 1) / 4).min(q - 1);
        (q_lo, q_hi.max(q_lo))
    }

    fn band_width(&self, cols: (usize, usize)) -> usize {
        let (lo, hi) = self.reach(cols);
        hi - lo + 1
    }

    fn check<'c>(&self, coalitions: impl Iterator<Item = &'c [u64]>) -> Result<(), CnnError> {
        for (i, m) in coalitions.enumerate() {
            if m.len() < self.words() {
                return Err(CnnError::Input(format!(
                    "coalition {i} has {} words, {} pixels need {}",
                    m.len(),
                    self.height * self.width,
                    self.words()
                )));
            }
        }
        Ok(())
    }

    /// Whole forward passes from the assembled first-layer maps; `keep` caches the deeper
    /// activations for later steps.
    fn full(&self, coalitions: &[&[u64]], keep: bool) -> Result<Vec<f64>, CnnError> {
        let n = coalitions.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let _guard = tch::no_grad_guard();
        let (ph, pw) = (self.height / 2, self.width / 2);
        let cells = ph * pw;
        let mut batch = Assembly {
            whole: vec![false; n * cells],
            ..Default::default()
        };
        let mut kept = vec![0u32; (self.height + 1) * (self.width + 1)];
        for (k, m) in coalitions.iter().enumerate() {
            self.integral(m, &mut kept);
            for i in 0..ph {
                for j in 0..pw {
                    self.classify(&mut batch, m, &kept, (i, j), k * cells + i * pw + j);
                }
            }
        }
        let Assembly {
            whole,
            edge_cells,
            patches,
        } = batch;
        let cond = Tensor::from_slice(&whole)
            .view([n as i64, ph as i64, pw as i64, 1])
            .to_device(self.device);
        let a1 = self
            .first_window
            .where_self(&cond, &self.first_background)
            .contiguous();
        self.fill_edges(&a1, &edge_cells, &patches);
        let a2 = self.net.layer(1, &a1.permute([0, 3, 1, 2]));
        let a3 = self.net.layer(2, &a2);
        let (c2, c3, rows, cols) = self.deep;
        let n64 = n as i64;
        let by_column = |t: &Tensor, c: i64, pad: i64| {
            t.permute([0, 3, 1, 2])
                .reshape([n64, cols, c * rows])
                .constant_pad_nd([0, 0, pad, pad])
                .contiguous()
        };
        let a3c = by_column(&a3, c3, 1);
        let margins = self.head(&a3c)?;
        if keep {
            self.remember(coalitions, &by_column(&a2, c2, 2), &a3c);
        }
        Ok(margins)
    }

    /// Each step's child from its parent's activations, recomputing conv2 and conv3 only in
    /// a band of columns wide enough for every step of the batch.
    fn banded(&self, steps: &[Step<'_>]) -> Result<Vec<f64>, CnnError> {
        let _guard = tch::no_grad_guard();
        let (c2, c3, rows, cols) = self.deep;
        let (n, ph, pw) = (steps.len() as i64, self.height / 2, self.width / 2);
        let bands: Vec<(usize, usize)> = steps.iter().map(|s| self.reach(s.cols)).collect();
        let w2 = bands.iter().map(|(lo, hi)| hi - lo + 1).max().unwrap_or(1);
        let starts: Vec<usize> = bands
            .iter()
            .map(|(lo, _)| (*lo).min(cols as usize - w2))
            .collect();
        // The first-layer band under those conv2 columns: 4·w2 + 1 columns from 4·start − 1.
        let wb = 4 * w2 + 1;
        let mut batch = Assembly {
            whole: vec![false; steps.len() * ph * wb],
            ..Default::default()
        };
        let mut columns: Vec<i64> = Vec::with_capacity(steps.len() * wb);
        let mut kept = vec![0u32; (self.height + 1) * (self.width + 1)];
        for (k, (s, &start)) in steps.iter().zip(&starts).enumerate() {
            self.integral(s.child, &mut kept);
            for t in 0..wb {
                // Column j + 1 of the padded maps; j = −1 is the zero padding.
                let j = (4 * start + t) as i64 - 1;
                columns.push(j + 1);
                if j < 0 || j as usize >= pw {
                    continue;
                }
                for i in 0..ph {
                    let cell = (k * ph + i) * wb + t;
                    self.classify(&mut batch, s.child, &kept, (i, j as usize), cell);
                }
            }
        }
        let Assembly {
            whole,
            edge_cells,
            patches,
        } = batch;
        let f = self.filters as i64;
        let columns = Tensor::from_slice(&columns).to_device(self.device);
        let cut = |map: &Tensor| {
            map.index_select(1, &columns)
                .view([ph as i64, n, wb as i64, f])
                .permute([1, 0, 2, 3])
        };
        let cond = Tensor::from_slice(&whole)
            .view([n, ph as i64, wb as i64, 1])
            .to_device(self.device);
        let a1 = cut(&self.first_window_padded)
            .where_self(&cond, &cut(&self.first_background_padded))
            .contiguous();
        self.fill_edges(&a1, &edge_cells, &patches);
        let (w, b) = self.net.conv(1);
        let a2_band = a1
            .permute([0, 3, 1, 2])
            .conv2d(w, Some(b), [2, 2], [1, 0], [1, 1], 1)
            .max_pool2d_default(2)
            .relu();
        let cache = self.cache.borrow();
        let parents: Vec<&Deep> = steps.iter().map(|s| &cache[s.parent]).collect();
        let a2 = Tensor::stack(&parents.iter().map(|d| &d.a2).collect::<Vec<_>>(), 0);
        let a3 = Tensor::stack(&parents.iter().map(|d| &d.a3).collect::<Vec<_>>(), 0);
        drop(cache);
        let rows_of = |pitch: i64, offset: i64, width: usize| {
            let idx: Vec<i64> = starts
                .iter()
                .enumerate()
                .flat_map(|(k, &s)| {
                    (0..width as i64).map(move |t| k as i64 * pitch + s as i64 + offset + t)
                })
                .collect();
            Tensor::from_slice(&idx).to_device(self.device)
        };
        let mut a2_flat = a2.view([n * (cols + 4), c2 * rows]);
        let _ = a2_flat.index_copy_(
            0,
            &rows_of(cols + 4, 2, w2),
            &a2_band
                .permute([0, 3, 1, 2])
                .reshape([n * w2 as i64, c2 * rows]),
        );
        // conv3 on the changed columns and one more each side, from two more each side.
        let (w, b) = self.net.conv(2);
        let a3_band = a2_flat
            .index_select(0, &rows_of(cols + 4, 0, w2 + 4))
            .view([n, w2 as i64 + 4, c2, rows])
            .permute([0, 2, 3, 1])
            .conv2d(w, Some(b), [1, 1], [1, 0], [1, 1], 1)
            .relu();
        let mut a3_flat = a3.view([n * (cols + 2), c3 * rows]);
        let _ = a3_flat.index_copy_(
            0,
            &rows_of(cols + 2, 0, w2 + 2),
            &a3_band
                .permute([0, 3, 1, 2])
                .reshape([n * (w2 as i64 + 2), c3 * rows]),
        );
        let margins = self.head(&a3)?;
        let children: Vec<&[u64]> = steps.iter().map(|s| s.child).collect();
        self.remember(&children, &a2, &a3);
        Ok(margins)
    }

    /// fc1, ReLU, fc2 on column-major conv3 activations `[n, cols + 2, c3·rows]`.
    fn head(&self, a3: &Tensor) -> Result<Vec<f64>, CnnError> {
        let (_, c3, rows, cols) = self.deep;
        let n = a3.size()[0];
        let [(_, b1), (w2, b2)] = self.net.head();
        let logits = a3
            .narrow(1, 1, cols)
            .reshape([n, cols * c3 * rows])
            .linear(&self.fc1_by_column, Some(b1))
            .relu()
            .linear(w2, Some(b2));
        let flat = read_f32(&logits, "reading logits")?;
        Ok(flat.chunks_exact(2).map(|l| (l[1] - l[0]) as f64).collect())
    }

    /// Keeps the coalitions' deeper activations (rows of the batch tensors), up to [`CACHED`].
    fn remember(&self, coalitions: &[&[u64]], a2: &Tensor, a3: &Tensor) {
        let mut cache = self.cache.borrow_mut();
        for (k, m) in coalitions.iter().enumerate() {
            if cache.len() >= CACHED {
                break;
            }
            cache.entry(m.to_vec()).or_insert_with(|| Deep {
                a2: a2.get(k as i64),
                a3: a3.get(k as i64),
            });
        }
    }

    /// Computes the cells on coalition edges from their input patches, into `a1`
    /// (`[…, filters]`, contiguous).
    fn fill_edges(&self, a1: &Tensor, edge_cells: &[i64], patches: &[f32]) {
        if edge_cells.is_empty() {
            return;
        }
        let f = self.filters as i64;
        let k = edge_cells.len() as i64;
        let p = Tensor::from_slice(patches)
            .view([k, (self.channels * PATCH * PATCH) as i64])
            .to_device(self.device);
        let edge = (p.mm(&self.patch_weights).view([k, 4, f]) + &self.bias)
            .amax([1], false)
            .relu();
        let index = Tensor::from_slice(edge_cells).to_device(self.device);
        let mut flat = a1.view([-1, f]);
        let _ = flat.index_copy_(0, &index, &edge);
    }

    /// Records pooled cell (i, j) of coalition `m` as batch cell `cell`.
    fn classify(
        &self,
        batch: &mut Assembly,
        m: &[u64],
        kept: &[u32],
        (i, j): (usize, usize),
        cell: usize,
    ) {
        match self.cell(kept, i, j) {
            Cell::Window => batch.whole[cell] = true,
            Cell::Background => {}
            Cell::Edge => {
                batch.edge_cells.push(cell as i64);
                self.patch(m, i, j, &mut batch.patches);
            }
        }
    }

    /// Whether pooled cell (i, j)'s input patch is all window, all background, or both.
    fn cell(&self, kept: &[u32], i: usize, j: usize) -> Cell {
        let (r0, r1) = ((2 * i).saturating_sub(1), (2 * i + 3).min(self.height));
        let (c0, c1) = ((2 * j).saturating_sub(1), (2 * j + 3).min(self.width));
        let at = |r: usize, c: usize| kept[r * (self.width + 1) + c];
        let inside = at(r1, c1) + at(r0, c0) - at(r0, c1) - at(r1, c0);
        if inside == ((r1 - r0) * (c1 - c0)) as u32 {
            Cell::Window
        } else if inside == 0 {
            Cell::Background
        } else {
            Cell::Edge
        }
    }

    /// `kept[(r, c)]` = pixels of the coalition above and left of (r, c): an integral image,
    /// so each cell's count is four lookups.
    fn integral(&self, m: &[u64], kept: &mut [u32]) {
        let w1 = self.width + 1;
        for r in 0..self.height {
            let mut run = 0;
            for c in 0..self.width {
                let p = r * self.width + c;
                run += (m[p / 64] >> (p % 64) & 1) as u32;
                kept[(r + 1) * w1 + c + 1] = kept[r * w1 + c + 1] + run;
            }
        }
    }

    /// The 4 × 4 input patch of pooled cell (i, j), window or background pixel by pixel, zero
    /// outside the image (the convolution's padding), appended channel by channel.
    fn patch(&self, m: &[u64], i: usize, j: usize, out: &mut Vec<f32>) {
        let hw = self.height * self.width;
        for ci in 0..self.channels {
            for pr in 0..PATCH {
                for pc in 0..PATCH {
                    let (r, c) = ((2 * i + pr).wrapping_sub(1), (2 * j + pc).wrapping_sub(1));
                    out.push(if r < self.height && c < self.width {
                        let p = r * self.width + c;
                        let src = if m[p / 64] >> (p % 64) & 1 == 1 {
                            &self.window
                        } else {
                            &self.background
                        };
                        src[ci * hw + p]
                    } else {
                        0.0
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tch::nn::{self, ModuleT};

    use super::Step;
    use crate::cnn::{Cnn2d, CnnModel, INPUT_SHAPE};
    use crate::hash::ModelHash;

    /// A CNN2D with non-trivial batch-norm statistics and input standardisation.
    fn model() -> CnnModel {
        tch::manual_seed(11);
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let mut net = Cnn2d::new(&vs.root(), INPUT_SHAPE);
        let x = tch::Tensor::randn([8, 3, 33, 153], (tch::Kind::Float, tch::Device::Cpu));
        for _ in 0..3 {
            let _ = net.forward_t(&(&x * 1.5 + 0.5), true);
        }
        tch::no_grad(|| {
            net.norm_mean
                .copy_(&tch::Tensor::from_slice(&[0.3f32, -0.2, 0.1]));
            net.norm_std
                .copy_(&tch::Tensor::from_slice(&[1.5f32, 0.8, 1.1]));
        });
        CnnModel::from_native(&net, ModelHash("sha256:test".into()), tch::Device::Cpu)
    }

    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }
        fn normal(&mut self) -> f32 {
            (0..12)
                .map(|_| (self.next() % 10_000) as f32 / 10_000.0)
                .sum::<f32>()
                - 6.0
        }
    }

    #[test]
    fn coalitions_give_the_margins_of_the_composed_images() {
        let model = model();
        let (h, w) = (33usize, 153usize);
        let hw = h * w;
        let mut rng = Lcg(5);
        let x: Vec<f32> = (0..3 * hw).map(|_| rng.normal()).collect();
        let b: Vec<f32> = (0..3 * hw).map(|_| 0.3 * rng.normal()).collect();
        let masked = model.masked(&x, &b).unwrap().expect("native model");
        let words = hw.div_ceil(64);
        let mut coalitions: Vec<Vec<u64>> = vec![vec![0; words], vec![u64::MAX; words]];
        // Unions of rectangles (what the partition explainer asks), touching every edge.
        for k in 0..6u64 {
            let mut m = vec![0u64; words];
            for _ in 0..=k {
                let (r0, c0) = (rng.next() as usize % h, rng.next() as usize % w);
                let (r1, c1) = (
                    (r0 + 1 + rng.next() as usize % 20).min(h),
                    (c0 + 1 + rng.next() as usize % 60).min(w),
                );
                for r in r0..r1 {
                    for c in c0..c1 {
                        let p = r * w + c;
                        m[p / 64] |= 1 << (p % 64);
                    }
                }
            }
            coalitions.push(m);
        }
        // Salt and pepper: every cell on an edge.
        coalitions.push((0..words).map(|_| rng.next() << 31 ^ rng.next()).collect());
        let refs: Vec<&[u64]> = coalitions.iter().map(Vec::as_slice).collect();
        let got = masked.margins(&refs).unwrap();
        let want = composed(&model, &x, &b, &coalitions);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                "coalition {i}: {g} vs {w}"
            );
        }
        // Not a constant: the coalitions give different margins.
        assert!((want[0] - want[1]).abs() > 1e-3, "{want:?}");
    }

    /// Margins of composed images for coalitions (bitsets over 33 × 153 pixels).
    fn composed(model: &CnnModel, x: &[f32], b: &[f32], coalitions: &[Vec<u64>]) -> Vec<f64> {
        let hw = 33 * 153;
        let mut images = Vec::new();
        for m in coalitions {
            for ci in 0..3 {
                for p in 0..hw {
                    let keep = m[p / 64] >> (p % 64) & 1 == 1;
                    images.push(if keep { x[ci * hw + p] } else { b[ci * hw + p] });
                }
            }
        }
        model.margins(&images, coalitions.len()).unwrap()
    }

    #[test]
    fn steps_recompute_only_their_columns_and_give_the_same_margins() {
        let model = model();
        let (h, w) = (33usize, 153usize);
        let mut rng = Lcg(9);
        let x: Vec<f32> = (0..3 * h * w).map(|_| rng.normal()).collect();
        let b: Vec<f32> = (0..3 * h * w).map(|_| 0.3 * rng.normal()).collect();
        let masked = model.masked(&x, &b).unwrap().unwrap();
        let words = (h * w).div_ceil(64);
        let add = |m: &[u64], (r0, r1, c0, c1): (usize, usize, usize, usize)| {
            let mut m = m.to_vec();
            for r in r0..r1 {
                for c in c0..c1 {
                    let p = r * w + c;
                    m[p / 64] |= 1 << (p % 64);
                }
            }
            m
        };
        // Chains of regions as a partition explainer adds them: wide ones, narrow ones, and
        // ones at both image edges, so bands of every width and at every border are met.
        let regions = [
            (0, 33, 0, 76),
            (0, 16, 76, 153),
            (16, 33, 140, 153),
            (3, 9, 0, 4),
            (20, 28, 60, 65),
            (0, 1, 152, 153),
            (10, 12, 37, 39),
            (5, 30, 100, 119),
        ];
        let mut parents = vec![vec![0u64; words]];
        let mut chain = Vec::new();
        for r in regions {
            let parent = parents[rng.next() as usize % parents.len()].clone();
            let child = add(&parent, r);
            chain.push((parent, child.clone(), (r.2, r.3)));
            parents.push(child);
        }
        // Played in two batches: the second extends children of the first.
        for batch in [&chain[..4], &chain[4..]] {
            let steps: Vec<Step<'_>> = batch
                .iter()
                .map(|(p, c, cols)| Step {
                    parent: p,
                    child: c,
                    cols: *cols,
                })
                .collect();
            let got = masked.margins_steps(&steps).unwrap();
            let children: Vec<Vec<u64>> = batch.iter().map(|(_, c, _)| c.clone()).collect();
            let want = composed(&model, &x, &b, &children);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                    "step {i}: {g} vs {w}"
                );
            }
        }
        // Every coalition met (the empty one and each distinct child) is kept for later steps.
        let met: std::collections::HashSet<&Vec<u64>> = chain
            .iter()
            .map(|(_, c, _)| c)
            .chain(std::iter::once(&parents[0]))
            .collect();
        assert_eq!(masked.cache.borrow().len(), met.len());
    }

    #[test]
    fn short_coalitions_and_bad_inputs_are_errors() {
        let model = model();
        let n = 3 * 33 * 153;
        assert!(model.masked(&vec![0.0; n - 1], &vec![0.0; n]).is_err());
        let mut x = vec![0.0; n];
        x[7] = f32::NAN;
        assert!(model.masked(&x, &vec![0.0; n]).is_err());
        let masked = model.masked(&vec![0.0; n], &vec![0.0; n]).unwrap().unwrap();
        let err = masked.margins(&[&[0u64; 3]]).unwrap_err();
        assert!(err.to_string().contains("coalition 0 has 3 words"), "{err}");
        assert!(masked.margins(&[]).unwrap().is_empty());
    }
}
