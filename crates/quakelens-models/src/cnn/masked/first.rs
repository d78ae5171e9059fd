//! The first layer of images that mix a window with its background pixel by pixel.
//!
//! A cell of the pooled first-layer map sees only a 4 × 4 patch of input pixels (a 2 × 2
//! pooling window of 3 × 3 convolutions). A cell whose patch lies wholly in the window or
//! wholly in the background is copied from two maps computed once; only cells on a
//! coalition's edge are computed, all of a batch's in one matrix product.

use tch::{Device, Tensor};

use super::super::arch::FoldedCnn2d;
use super::super::{read_f32, CnnError};

/// Input rows (and columns) one pooled first-layer cell sees.
const PATCH: usize = 4;

/// How a pooled first-layer cell of a coalition is computed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cell {
    Window,
    Background,
    Edge,
}

/// Where a first-layer cell's `filters` values are: offsets into the window's or the
/// background's map, or into the edge cells computed for a batch.
#[derive(Clone, Copy)]
pub(super) enum Source {
    Window(usize),
    Background(usize),
    Edge(usize),
}

/// Edge cells of a batch waiting to be computed: their 4 × 4 input patches, channel by channel.
#[derive(Default)]
pub(super) struct EdgePatches {
    patches: Vec<f32>,
    count: usize,
}

pub(super) struct FirstLayer {
    device: Device,
    channels: usize,
    height: usize,
    width: usize,
    pub filters: usize,
    /// Rows and columns of the pooled map.
    pub rows: usize,
    pub cols: usize,
    /// Standardised window and background, `C × H × W`.
    window: Vec<f32>,
    background: Vec<f32>,
    /// Maps of the whole window and the whole background, `[rows][cols][filters]`.
    map_window: Vec<f32>,
    map_background: Vec<f32>,
    tensor_window: Tensor,
    tensor_background: Tensor,
    /// conv1 on one 4 × 4 patch as a matrix `[C·16, 4·filters]` (the four convolutions under a
    /// pooling window side by side), and its bias `[filters]`.
    patch_weights: Tensor,
    bias: Tensor,
}

impl FirstLayer {
    pub fn new(
        net: &FoldedCnn2d,
        device: Device,
        window: &[f32],
        background: &[f32],
    ) -> Result<Self, CnnError> {
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
        let (tensor_window, tensor_background) = (first(&xs), first(&bs));
        Ok(Self {
            device,
            channels,
            height,
            width,
            filters,
            rows: height / 2,
            cols: width / 2,
            window: read_f32(&xs, "standardising the window")?,
            background: read_f32(&bs, "standardising the background")?,
            map_window: read_f32(&tensor_window, "first layer of the window")?,
            map_background: read_f32(&tensor_background, "first layer of the background")?,
            tensor_window,
            tensor_background,
            patch_weights: Tensor::from_slice(&big)
                .view([(channels * PATCH * PATCH) as i64, (4 * filters) as i64])
                .to_device(device),
            bias: bias.view([1, 1, filters as i64]),
        })
    }

    /// The pooled first-layer maps `[n, filters, rows, cols]` of coalitions (NCHW shape,
    /// channels-last memory).
    pub fn maps(&self, coalitions: &[&[u64]]) -> Tensor {
        let n = coalitions.len();
        let mut sources = Vec::with_capacity(n * self.rows * self.cols);
        let mut edges = EdgePatches::default();
        for m in coalitions {
            let all = super::store::Rect::sized(self.rows, self.cols);
            self.sources(m, all, &mut edges, &mut sources);
        }
        let whole: Vec<bool> = sources
            .iter()
            .map(|s| matches!(s, Source::Window(_)))
            .collect();
        let edge_cells: Vec<i64> = sources
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s, Source::Edge(_)))
            .map(|(cell, _)| cell as i64)
            .collect();
        let cond = Tensor::from_slice(&whole)
            .view([n as i64, self.rows as i64, self.cols as i64, 1])
            .to_device(self.device);
        let a1 = self
            .tensor_window
            .where_self(&cond, &self.tensor_background)
            .contiguous();
        if let Some(values) = self.edges(&edges) {
            let index = Tensor::from_slice(&edge_cells).to_device(self.device);
            let mut flat = a1.view([-1, self.filters as i64]);
            let _ = flat.index_copy_(0, &index, &values);
        }
        a1.permute([0, 3, 1, 2])
    }

    /// Where each cell of `rect` (row-major) of coalition `m`'s map comes from; edge cells'
    /// patches are added to `edges`.
    pub fn sources(
        &self,
        m: &[u64],
        rect: super::store::Rect,
        edges: &mut EdgePatches,
        out: &mut Vec<Source>,
    ) {
        for (i, j) in rect.iter() {
            let at = (i * self.cols + j) * self.filters;
            out.push(match self.kind(m, i, j) {
                Cell::Window => Source::Window(at),
                Cell::Background => Source::Background(at),
                Cell::Edge => {
                    let e = edges.count * self.filters;
                    self.patch(m, i, j, edges);
                    Source::Edge(e)
                }
            });
        }
    }

    /// The values of the edge cells, `[count · filters]`, in the order they were added.
    pub fn edge_values(&self, edges: &EdgePatches) -> Result<Vec<f32>, CnnError> {
        match self.edges(edges) {
            Some(values) => read_f32(&values, "computing first-layer edge cells"),
            None => Ok(Vec::new()),
        }
    }

    /// A cell's `filters` values.
    pub fn value<'s>(&'s self, source: Source, edges: &'s [f32]) -> &'s [f32] {
        let (map, at) = match source {
            Source::Window(at) => (self.map_window.as_slice(), at),
            Source::Background(at) => (self.map_background.as_slice(), at),
            Source::Edge(at) => (edges, at),
        };
        &map[at..at + self.filters]
    }

    /// conv1, max-pool and ReLU on the edge cells' patches, `[count, filters]`.
    fn edges(&self, edges: &EdgePatches) -> Option<Tensor> {
        if edges.count == 0 {
            return None;
        }
        let f = self.filters as i64;
        let k = edges.count as i64;
        let p = Tensor::from_slice(&edges.patches)
            .view([k, (self.channels * PATCH * PATCH) as i64])
            .to_device(self.device);
        Some(
            (p.mm(&self.patch_weights).view([k, 4, f]) + &self.bias)
                .amax([1], false)
                .relu(),
        )
    }

    /// Whether pooled cell (i, j)'s input patch is all window, all background, or both.
    fn kind(&self, m: &[u64], i: usize, j: usize) -> Cell {
        let (r0, r1) = ((2 * i).saturating_sub(1), (2 * i + 3).min(self.height));
        let (c0, c1) = ((2 * j).saturating_sub(1), (2 * j + 3).min(self.width));
        let inside: u32 = (r0..r1)
            .map(|r| kept(m, r * self.width + c0, c1 - c0))
            .sum();
        if inside as usize == (r1 - r0) * (c1 - c0) {
            Cell::Window
        } else if inside == 0 {
            Cell::Background
        } else {
            Cell::Edge
        }
    }

    /// Adds the 4 × 4 input patch of pooled cell (i, j), window or background pixel by pixel,
    /// zero outside the image (the convolution's padding), channel by channel.
    fn patch(&self, m: &[u64], i: usize, j: usize, edges: &mut EdgePatches) {
        let hw = self.height * self.width;
        for ci in 0..self.channels {
            for pr in 0..PATCH {
                for pc in 0..PATCH {
                    let (r, c) = ((2 * i + pr).wrapping_sub(1), (2 * j + pc).wrapping_sub(1));
                    edges.patches.push(if r < self.height && c < self.width {
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
        edges.count += 1;
    }
}

/// How many of the `n` (≤ 64) pixels from bit `p` on are set.
fn kept(m: &[u64], p: usize, n: usize) -> u32 {
    let (word, offset) = (p / 64, p % 64);
    let mut bits = m[word] >> offset;
    if offset + n > 64 {
        bits |= m[word + 1] << (64 - offset);
    }
    let mask = if n == 64 { u64::MAX } else { (1 << n) - 1 };
    (bits & mask).count_ones()
}

#[cfg(test)]
mod tests {
    use super::kept;

    #[test]
    fn kept_counts_bits_across_word_boundaries() {
        let m = [0xF000_0000_0000_0000u64, 0b101];
        assert_eq!(kept(&m, 60, 4), 4);
        assert_eq!(kept(&m, 62, 4), 3);
        assert_eq!(kept(&m, 63, 3), 2);
        assert_eq!(kept(&m, 0, 4), 0);
        assert_eq!(kept(&m, 64, 3), 2);
    }
}
