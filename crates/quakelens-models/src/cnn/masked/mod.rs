//! The CNN on images that mix a window with its masked background pixel by pixel: what an
//! image SHAP explainer asks for, a thousand times per window.
//!
//! Two locality shortcuts, both exact:
//! - The first convolution dominates a forward pass (three input channels at full resolution,
//!   32 output maps) and its pooled cells see 4 × 4 input patches: see [`first`].
//! - A partition explainer's coalition adds one rectangle to a coalition it evaluated before.
//!   The deeper maps then change only in the cells that rectangle reaches (a few of conv2's
//!   4 × 19 and conv3's), so [`MaskedCnn::margins_steps`] recomputes those cells alone, as
//!   matrix products over the batch's changed cells, and updates fc1's sum by their change.
//!   Cells that did not change are read from the earlier coalition (see [`store`]).

mod first;
mod steps;
mod store;

use std::cell::RefCell;

use tch::{Device, Tensor};

use super::arch::{feature_map, FoldedCnn2d};
use super::{read_f32, CnnError};
use first::FirstLayer;
use store::{Node, Patch, Rect, Store};

/// Coalitions whose activations are kept for the coalitions that extend them. A coalition
/// reached by a step keeps only its changed cells (a few kB); one computed whole, about 60 kB.
const CACHED: usize = 8192;

/// A coalition that adds the pixels of one rectangle to `parent`: `child` differs from
/// `parent` only in input rows `rows.0..rows.1` and columns `cols.0..cols.1`.
pub struct Step<'c> {
    pub parent: &'c [u64],
    pub child: &'c [u64],
    pub rows: (usize, usize),
    pub cols: (usize, usize),
}

/// conv2, conv3 and the dense head in the forms the steps use (made once per model).
pub(crate) struct StepWeights {
    /// conv2/conv3 channels, the rows × columns of their (pooled) maps, fc1's width.
    c2: usize,
    c3: usize,
    rows: usize,
    cols: usize,
    hidden: usize,
    /// conv2 (batch norm folded) as a `[(kr, kc, in), out]` matrix, and its bias.
    conv2: Tensor,
    conv2_bias: Vec<f32>,
    /// conv3's nine taps side by side, `[in, (kr, kc, out)]`: what one input cell adds to
    /// the sums of the nine output cells around it.
    conv3_taps: Tensor,
    /// fc1's weight transposed, `[c3·rows·cols, hidden]`, and cut per conv3 column,
    /// `[(row, channel), hidden]`.
    fc1: Tensor,
    fc1_columns: Vec<Tensor>,
    fc1_bias: Vec<f32>,
    /// fc2 (`[classes, hidden]`, row-major) and its bias.
    fc2: Vec<f32>,
    fc2_bias: Vec<f32>,
}

impl StepWeights {
    pub(crate) fn new(net: &FoldedCnn2d) -> Result<Self, CnnError> {
        let _guard = tch::no_grad_guard();
        let input = net.input_shape();
        let (rows, cols) = feature_map(input[1], input[2]);
        let matrix = |w: &Tensor| {
            let s = w.size();
            w.permute([2, 3, 1, 0]).contiguous().view([s[1] * 9, s[0]])
        };
        let bias = |b: &Tensor, what: &str| read_f32(b, what);
        let (w2, b2) = net.conv(1);
        let (w3, _) = net.conv(2);
        let [(w1, b1), (wf, bf)] = net.head();
        let (c2, c3, hidden) = (w2.size()[0], w3.size()[0], w1.size()[0]);
        let fc1_columns = w1
            .view([hidden, c3, rows, cols])
            .permute([3, 2, 1, 0])
            .contiguous();
        let fc2 = read_f32(wf, "reading fc2")?;
        let fc2_bias = read_f32(bf, "reading fc2 bias")?;
        let h = hidden as usize;
        if fc2.len() != fc2_bias.len() * h {
            return Err(CnnError::Input("fc2 does not match fc1's width".into()));
        }
        Ok(Self {
            c2: c2 as usize,
            c3: c3 as usize,
            rows: rows as usize,
            cols: cols as usize,
            hidden: h,
            conv2: matrix(w2),
            conv2_bias: bias(b2, "reading conv2 bias")?,
            conv3_taps: w3.permute([1, 2, 3, 0]).contiguous().view([c2, 9 * c3]),
            fc1: w1.tr().contiguous(),
            fc1_columns: (0..cols)
                .map(|c| fc1_columns.get(c).view([rows * c3, hidden]))
                .collect(),
            fc1_bias: bias(b1, "reading fc1 bias")?,
            fc2,
            fc2_bias,
        })
    }

    /// The combination `Σ c_k · logit_k` of the logits as one row over fc1's outputs and a
    /// bias (the margin is `[-1, 1]`, class k's logit the k-th unit vector).
    fn output_row(&self, coefficients: &[f64]) -> Result<(Vec<f32>, f32), CnnError> {
        let classes = self.fc2_bias.len();
        if coefficients.len() != classes {
            return Err(CnnError::Input(format!(
                "{} output coefficients for {classes} classes",
                coefficients.len()
            )));
        }
        let h = self.hidden;
        let row = (0..h)
            .map(|o| {
                (0..classes)
                    .map(|k| coefficients[k] * self.fc2[k * h + o] as f64)
                    .sum::<f64>() as f32
            })
            .collect();
        let bias = (0..classes)
            .map(|k| coefficients[k] * self.fc2_bias[k] as f64)
            .sum::<f64>() as f32;
        Ok((row, bias))
    }
}

/// A window and its background, ready to evaluate coalitions of pixels.
pub struct MaskedCnn<'a> {
    net: &'a FoldedCnn2d,
    device: Device,
    height: usize,
    width: usize,
    first: FirstLayer,
    deep: &'a StepWeights,
    /// The explained output: fc2's rows combined (see [`StepWeights::output_row`]).
    out_row: Vec<f32>,
    out_bias: f32,
    store: RefCell<Store>,
}

impl<'a> MaskedCnn<'a> {
    pub(crate) fn new(
        net: &'a FoldedCnn2d,
        deep: &'a StepWeights,
        device: Device,
        window: &[f32],
        background: &[f32],
        output: &[f64],
    ) -> Result<Self, CnnError> {
        let _guard = tch::no_grad_guard();
        let input = net.input_shape();
        let first = FirstLayer::new(net, device, window, background)?;
        let (out_row, out_bias) = deep.output_row(output)?;
        Ok(Self {
            net,
            device,
            height: input[1] as usize,
            width: input[2] as usize,
            first,
            deep,
            out_row,
            out_bias,
            store: RefCell::new(Store::new(CACHED)),
        })
    }

    /// The explained output from fc1's sum before its bias.
    fn output(&self, hidden: &[f64]) -> f64 {
        let relu = |v: f64| v.max(0.0);
        hidden
            .iter()
            .zip(&self.deep.fc1_bias)
            .zip(&self.out_row)
            .map(|((h, b), w)| *w as f64 * relu(h + *b as f64))
            .sum::<f64>()
            + self.out_bias as f64
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
    /// (through this method, or as a step's child) recomputes only the cells its rectangle
    /// reaches; the values equal [`MaskedCnn::margins`]'.
    pub fn margins_steps(&self, steps: &[Step<'_>]) -> Result<Vec<f64>, CnnError> {
        self.check(steps.iter().flat_map(|s| [s.parent, s.child]))?;
        for (i, s) in steps.iter().enumerate() {
            self.check_step(s)
                .map_err(|e| CnnError::Input(format!("step {i}: {e}")))?;
        }
        if steps.is_empty() {
            return Ok(Vec::new());
        }
        // Parents not seen yet (the empty coalition, say) are evaluated once first.
        let mut missing: Vec<&[u64]> = {
            let store = self.store.borrow();
            steps
                .iter()
                .map(|s| s.parent)
                .filter(|p| store.find(p).is_none())
                .collect()
        };
        missing.sort();
        missing.dedup();
        if !missing.is_empty() {
            self.full(&missing, true)?;
            let store = self.store.borrow();
            if steps.iter().any(|s| store.find(s.parent).is_none()) {
                // The store is full: whole passes for this batch.
                drop(store);
                let children: Vec<&[u64]> = steps.iter().map(|s| s.child).collect();
                return self.full(&children, false);
            }
        }
        self.extend(steps)
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

    /// A step's rectangle lies in the image, is not empty, and holds every pixel where child
    /// and parent differ.
    fn check_step(&self, s: &Step<'_>) -> Result<(), String> {
        let ((r0, r1), (c0, c1)) = (s.rows, s.cols);
        if r0 >= r1 || c0 >= c1 || r1 > self.height || c1 > self.width {
            return Err(format!(
                "rows {r0}..{r1} × columns {c0}..{c1} is not a rectangle of the {} × {} image",
                self.height, self.width
            ));
        }
        let pixels = self.height * self.width;
        for (w, (a, b)) in s.parent.iter().zip(s.child).enumerate() {
            let mut diff = a ^ b;
            while diff != 0 {
                let p = w * 64 + diff.trailing_zeros() as usize;
                diff &= diff - 1;
                let (r, c) = (p / self.width, p % self.width);
                if p < pixels && !((r0..r1).contains(&r) && (c0..c1).contains(&c)) {
                    return Err(format!(
                        "child and parent differ at pixel ({r}, {c}), outside rows {r0}..{r1} × columns {c0}..{c1}"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whole forward passes from the assembled first-layer maps; `keep` stores the deeper
    /// activations for later steps.
    fn full(&self, coalitions: &[&[u64]], keep: bool) -> Result<Vec<f64>, CnnError> {
        let n = coalitions.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let _guard = tch::no_grad_guard();
        let a1 = self.first.maps(coalitions);
        let z2 = self.net.convolve(1, &a1);
        let (rows, cols) = (self.deep.rows as i64, self.deep.cols as i64);
        let z2 = z2.narrow(2, 0, 2 * rows).narrow(3, 0, 2 * cols);
        let a2 = z2.max_pool2d_default(2).relu();
        let z3 = self.net.convolve(2, &a2);
        let hidden = read_f32(
            &z3.relu().flatten(1, -1).mm(&self.deep.fc1),
            "computing fc1",
        )?;
        let hidden: Vec<Vec<f64>> = hidden
            .chunks_exact(self.deep.hidden)
            .map(|h| h.iter().map(|&v| v as f64).collect())
            .collect();
        let margins = hidden.iter().map(|h| self.output(h)).collect();
        if keep {
            let cells = |t: &Tensor, what| read_f32(&t.permute([0, 2, 3, 1]), what);
            let z2 = cells(&z2, "reading conv2")?;
            let (a2, z3) = (cells(&a2, "reading conv2")?, cells(&z3, "reading conv3")?);
            let (s1, s2, s3) = (z2.len() / n, a2.len() / n, z3.len() / n);
            let mut store = self.store.borrow_mut();
            for (k, (m, h)) in coalitions.iter().zip(hidden).enumerate() {
                let patch = |rect: Rect, c: usize, values: &[f32], size: usize| Patch {
                    rect,
                    channels: c,
                    values: values[k * size..(k + 1) * size].to_vec(),
                };
                let (rows, cols) = (self.deep.rows, self.deep.cols);
                let (pooled, conv) = (Rect::sized(rows, cols), Rect::sized(2 * rows, 2 * cols));
                store.insert(
                    m,
                    Node {
                        parent: None,
                        z2: patch(conv, self.deep.c2, &z2, s1),
                        a2: patch(pooled, self.deep.c2, &a2, s2),
                        z3: patch(pooled, self.deep.c3, &z3, s3),
                        hidden: h,
                    },
                );
            }
        }
        Ok(margins)
    }
}

#[cfg(test)]
mod tests {
    use tch::nn::{self, ModuleT};

    use super::Step;
    use crate::cnn::{Cnn2d, CnnModel, INPUT_SHAPE, MARGIN};
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
        /// A 3 × 33 × 153 image of normal values times `scale`.
        fn image(&mut self, scale: f32) -> Vec<f32> {
            (0..3 * 33 * 153).map(|_| scale * self.normal()).collect()
        }
    }

    #[test]
    fn coalitions_give_the_margins_of_the_composed_images() {
        let model = model();
        let (h, w) = (33usize, 153usize);
        let hw = h * w;
        let mut rng = Lcg(5);
        let (x, b) = (rng.image(1.0), rng.image(0.3));
        let masked = model
            .masked(&x, &b, &MARGIN)
            .unwrap()
            .expect("native model");
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
                m = add(&m, (r0, r1, c0, c1));
            }
            coalitions.push(m);
        }
        // Salt and pepper: every cell on an edge.
        coalitions.push((0..words).map(|_| rng.next() << 31 ^ rng.next()).collect());
        let refs: Vec<&[u64]> = coalitions.iter().map(Vec::as_slice).collect();
        let got = masked.margins(&refs).unwrap();
        let want = composed(&model, &x, &b, &coalitions);
        assert_close(&got, &want, "coalitions");
        // Not a constant: the coalitions give different margins.
        assert!((want[0] - want[1]).abs() > 1e-3, "{want:?}");
        // Any other output: here the aftershock logit alone (the study's top-class target).
        let class = model.masked(&x, &b, &[0.0, 1.0]).unwrap().unwrap();
        let got = class.margins(&refs).unwrap();
        let images = compose_all(&x, &b, &coalitions);
        let want = model
            .outputs(&images, coalitions.len(), &[0.0, 1.0])
            .unwrap();
        assert_close(&got, &want, "aftershock logit");
        assert!(
            model.masked(&x, &b, &[1.0]).is_err(),
            "one coefficient for two classes"
        );
    }

    fn compose_all(x: &[f32], b: &[f32], coalitions: &[Vec<u64>]) -> Vec<f32> {
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
        images
    }

    /// Margins of composed images for coalitions (bitsets over 33 × 153 pixels).
    fn composed(model: &CnnModel, x: &[f32], b: &[f32], coalitions: &[Vec<u64>]) -> Vec<f64> {
        model
            .margins(&compose_all(x, b, coalitions), coalitions.len())
            .unwrap()
    }

    #[test]
    fn steps_recompute_only_what_their_rectangles_reach_and_give_the_same_margins() {
        let model = model();
        let (h, w) = (33usize, 153usize);
        let mut rng = Lcg(9);
        let (x, b) = (rng.image(1.0), rng.image(0.3));
        let masked = model.masked(&x, &b, &MARGIN).unwrap().unwrap();
        let words = (h * w).div_ceil(64);
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
            chain.push((parent, child.clone(), r));
            parents.push(child);
        }
        // Played in two batches: the second extends children of the first.
        for batch in [&chain[..4], &chain[4..]] {
            let got = play(&masked, batch);
            let children: Vec<Vec<u64>> = batch.iter().map(|(_, c, _)| c.clone()).collect();
            let want = composed(&model, &x, &b, &children);
            assert_close(&got, &want, "steps");
        }
        // Every coalition met (the empty one and each distinct child) is kept for later steps.
        let met: std::collections::HashSet<&Vec<u64>> = chain
            .iter()
            .map(|(_, c, _)| c)
            .chain(std::iter::once(&parents[0]))
            .collect();
        assert_eq!(masked.store.borrow().len(), met.len());
    }

    #[test]
    fn short_coalitions_and_bad_inputs_are_errors() {
        let model = model();
        let n = 3 * 33 * 153;
        assert!(model
            .masked(&vec![0.0; n - 1], &vec![0.0; n], &MARGIN)
            .is_err());
        let mut x = vec![0.0; n];
        x[7] = f32::NAN;
        assert!(model.masked(&x, &vec![0.0; n], &MARGIN).is_err());
        let masked = model
            .masked(&vec![0.0; n], &vec![0.0; n], &MARGIN)
            .unwrap()
            .unwrap();
        let err = masked.margins(&[&[0u64; 3]]).unwrap_err();
        assert!(err.to_string().contains("coalition 0 has 3 words"), "{err}");
        assert!(masked.margins(&[]).unwrap().is_empty());
    }

    /// Rectangles (r0, r1, c0, c1) of a 33 × 153 image.
    type Region = (usize, usize, usize, usize);

    /// The margins of (parent, child, added region) steps, in one batch.
    fn play(masked: &super::MaskedCnn<'_>, chain: &[(Vec<u64>, Vec<u64>, Region)]) -> Vec<f64> {
        let steps: Vec<Step<'_>> = chain
            .iter()
            .map(|(p, c, (r0, r1, c0, c1))| Step {
                parent: p,
                child: c,
                rows: (*r0, *r1),
                cols: (*c0, *c1),
            })
            .collect();
        masked.margins_steps(&steps).unwrap()
    }

    /// Margins equal to 1e-4 relative (f32 sums in a different order).
    fn assert_close(got: &[f64], want: &[f64], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                "{what} {i}: {g} vs {w}"
            );
        }
    }

    /// A coalition with rectangle (r0, r1, c0, c1) of a 33 × 153 image added.
    fn add(m: &[u64], (r0, r1, c0, c1): Region) -> Vec<u64> {
        let mut m = m.to_vec();
        for r in r0..r1 {
            for c in c0..c1 {
                let p = r * 153 + c;
                m[p / 64] |= 1 << (p % 64);
            }
        }
        m
    }

    #[test]
    fn long_chains_of_small_steps_keep_the_margins_exact() {
        // What a partition explainer does deep in its hierarchy: each coalition adds a small
        // rectangle to one added a batch earlier, so cells are read through many ancestors.
        let model = model();
        let (h, w) = (33usize, 153usize);
        let mut rng = Lcg(21);
        let (x, b) = (rng.image(1.0), rng.image(0.3));
        let masked = model.masked(&x, &b, &MARGIN).unwrap().unwrap();
        let mut frontier = vec![vec![0u64; (h * w).div_ceil(64)]; 6];
        for level in 0..8 {
            let mut chain = Vec::new();
            for parent in &frontier {
                // One-pixel rectangles at the corners, small ones anywhere.
                let r = match (level, chain.len()) {
                    (0, 0) => (0, 1, 0, 1),
                    (0, 1) => (32, 33, 152, 153),
                    (1, 0) => (0, 2, 150, 153),
                    _ => {
                        let (r0, c0) = (rng.next() as usize % h, rng.next() as usize % w);
                        let r1 = (r0 + 1 + rng.next() as usize % 4).min(h);
                        (r0, r1, c0, (c0 + 1 + rng.next() as usize % 6).min(w))
                    }
                };
                chain.push((parent.clone(), add(parent, r), r));
            }
            let got = play(&masked, &chain);
            frontier = chain.into_iter().map(|(_, c, _)| c).collect();
            let want = composed(&model, &x, &b, &frontier);
            assert_close(&got, &want, &format!("level {level}"));
        }
    }

    #[test]
    fn a_full_store_falls_back_to_whole_passes() {
        let model = model();
        let mut rng = Lcg(4);
        let n = 3 * 33 * 153;
        let x = rng.image(1.0);
        let b = vec![0.1f32; n];
        let masked = model.masked(&x, &b, &MARGIN).unwrap().unwrap();
        *masked.store.borrow_mut() = super::Store::new(1);
        let empty = vec![0u64; (33 * 153usize).div_ceil(64)];
        let first = add(&empty, (0, 33, 0, 76));
        let second = add(&first, (5, 9, 80, 84));
        let steps = |p: &[u64], c: &[u64], rows, cols| {
            masked.margins_steps(&[Step {
                parent: p,
                child: c,
                rows,
                cols,
            }])
        };
        let got = [
            steps(&empty, &first, (0, 33), (0, 76)).unwrap()[0],
            // `first` could not be stored: whole passes.
            steps(&first, &second, (5, 9), (80, 84)).unwrap()[0],
        ];
        let want = composed(&model, &x, &b, &[first, second]);
        assert_close(&got, &want, "fallback");
        assert_eq!(masked.store.borrow().len(), 1);
    }

    #[test]
    fn steps_must_add_what_their_rectangle_says() {
        let model = model();
        let n = 3 * 33 * 153;
        let masked = model
            .masked(&vec![0.5; n], &vec![0.0; n], &MARGIN)
            .unwrap()
            .unwrap();
        let empty = vec![0u64; (33 * 153usize).div_ceil(64)];
        let child = add(&empty, (2, 4, 10, 20));
        let step = |rows, cols| Step {
            parent: &empty,
            child: &child,
            rows,
            cols,
        };
        let err = masked
            .margins_steps(&[step((0, 33), (0, 153)), step((2, 4), (10, 19))])
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("step 1: child and parent differ at pixel (2, 19)"),
            "{err}"
        );
        for bad in [((3, 3), (10, 20)), ((2, 4), (150, 154))] {
            let err = masked.margins_steps(&[step(bad.0, bad.1)]).unwrap_err();
            assert!(err.to_string().contains("is not a rectangle"), "{err}");
        }
        // Nothing was evaluated or stored for the refused batches.
        assert_eq!(masked.store.borrow().len(), 0);
    }
}
