//! The CNN on images that mix a window with its masked background pixel by pixel: what an
//! image SHAP explainer asks for, a thousand times per window.
//!
//! The first convolution dominates the cost (three input channels at full resolution, 32
//! output maps), and it is local: a cell of the pooled first-layer map sees only a 4 × 4 patch
//! of input pixels. A cell whose patch lies wholly in the window or wholly in the background is
//! copied from two maps computed once; only cells on a mask's edge are computed, all of a
//! batch's in one matrix product. The rest of the network runs as usual on the assembled maps.

use tch::{Device, Kind, Tensor};

use super::arch::FoldedCnn2d;
use super::CnnError;

/// Input rows (and columns) one pooled first-layer cell sees: a 2 × 2 pooling window of 3 × 3
/// convolutions.
const PATCH: usize = 4;

/// A window and its background, ready to evaluate coalitions of pixels.
pub struct MaskedCnn<'a> {
    net: &'a FoldedCnn2d,
    device: Device,
    channels: usize,
    height: usize,
    width: usize,
    filters: usize,
    /// Standardised window and background, `C × H × W`.
    window: Vec<f32>,
    background: Vec<f32>,
    /// First-layer maps of the whole window and the whole background, `[H/2, W/2, filters]`.
    first_window: Tensor,
    first_background: Tensor,
    /// conv1 on one 4 × 4 patch as a matrix `[C·16, 4·filters]` (the four convolutions under a
    /// pooling window side by side), and its bias `[filters]`.
    patch_weights: Tensor,
    bias: Tensor,
}

fn to_vec(t: &Tensor, what: &str) -> Result<Vec<f32>, CnnError> {
    Vec::<f32>::try_from(t.to_device(Device::Cpu).contiguous().flatten(0, -1)).map_err(|e| {
        CnnError::Torch {
            context: what.into(),
            error: e.to_string(),
        }
    })
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
        let (weight, bias) = net.first_conv();
        let filters = weight.size()[0] as usize;
        let w = to_vec(weight, "reading conv1 weights")?;
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
        Ok(Self {
            net,
            device,
            channels,
            height,
            width,
            filters,
            window: to_vec(&xs, "standardising the window")?,
            background: to_vec(&bs, "standardising the background")?,
            first_window: first(&xs),
            first_background: first(&bs),
            patch_weights: Tensor::from_slice(&big)
                .view([(channels * PATCH * PATCH) as i64, (4 * filters) as i64])
                .to_device(device),
            bias: bias.view([1, 1, filters as i64]),
        })
    }

    /// Words of a coalition bitset: bit `row · W + col` set keeps the window's pixel there.
    pub fn words(&self) -> usize {
        (self.height * self.width).div_ceil(64)
    }

    /// The aftershock-minus-foreshock margin for each coalition.
    pub fn margins(&self, coalitions: &[&[u64]]) -> Result<Vec<f64>, CnnError> {
        let n = coalitions.len();
        if let Some((i, m)) = coalitions
            .iter()
            .enumerate()
            .find(|(_, m)| m.len() < self.words())
        {
            return Err(CnnError::Input(format!(
                "coalition {i} has {} words, {} pixels need {}",
                m.len(),
                self.height * self.width,
                self.words()
            )));
        }
        if n == 0 {
            return Ok(Vec::new());
        }
        let _guard = tch::no_grad_guard();
        let (ph, pw, f) = (self.height / 2, self.width / 2, self.filters);
        let cells = ph * pw;
        let mut whole = vec![false; n * cells];
        let mut edge_cells: Vec<i64> = Vec::new();
        let mut patches: Vec<f32> = Vec::new();
        let mut kept = vec![0u32; (self.height + 1) * (self.width + 1)];
        for (k, m) in coalitions.iter().enumerate() {
            self.integral(m, &mut kept);
            for i in 0..ph {
                for j in 0..pw {
                    let (r0, r1) = ((2 * i).saturating_sub(1), (2 * i + 3).min(self.height));
                    let (c0, c1) = ((2 * j).saturating_sub(1), (2 * j + 3).min(self.width));
                    let at = |r: usize, c: usize| kept[r * (self.width + 1) + c];
                    let inside = at(r1, c1) + at(r0, c0) - at(r0, c1) - at(r1, c0);
                    let area = ((r1 - r0) * (c1 - c0)) as u32;
                    let cell = k * cells + i * pw + j;
                    if inside == area {
                        whole[cell] = true;
                    } else if inside > 0 {
                        edge_cells.push(cell as i64);
                        self.patch(m, i, j, &mut patches);
                    }
                }
            }
        }
        let cond = Tensor::from_slice(&whole)
            .view([n as i64, ph as i64, pw as i64, 1])
            .to_device(self.device);
        let a1 = self
            .first_window
            .where_self(&cond, &self.first_background)
            .contiguous();
        if !edge_cells.is_empty() {
            let k = edge_cells.len() as i64;
            let p = Tensor::from_slice(&patches)
                .view([k, (self.channels * PATCH * PATCH) as i64])
                .to_device(self.device);
            let edge = (p.mm(&self.patch_weights).view([k, 4, f as i64]) + &self.bias)
                .amax([1], false)
                .relu();
            let index = Tensor::from_slice(&edge_cells).to_device(self.device);
            let mut flat = a1.view([(n * cells) as i64, f as i64]);
            let _ = flat.index_copy_(0, &index, &edge);
        }
        let logits = self.net.after_first_layer(a1.permute([0, 3, 1, 2]));
        let flat = to_vec(&logits.to_kind(Kind::Float), "reading logits")?;
        Ok(flat.chunks_exact(2).map(|l| (l[1] - l[0]) as f64).collect())
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

        let mut images = Vec::new();
        for m in &coalitions {
            for ci in 0..3 {
                for p in 0..hw {
                    let keep = m[p / 64] >> (p % 64) & 1 == 1;
                    images.push(if keep { x[ci * hw + p] } else { b[ci * hw + p] });
                }
            }
        }
        let want: Vec<f64> = model
            .logits(&images, coalitions.len())
            .unwrap()
            .iter()
            .map(|l| (l[1] - l[0]) as f64)
            .collect();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                "coalition {i}: {g} vs {w}"
            );
        }
        // Not a constant: the coalitions give different margins.
        assert!((want[0] - want[1]).abs() > 1e-3, "{want:?}");
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
