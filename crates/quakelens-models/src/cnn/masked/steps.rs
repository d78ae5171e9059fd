//! Steps: a coalition that adds one rectangle to a stored coalition recomputes only the
//! conv2 and conv3 cells the rectangle reaches, as rows of three matrix products shared by the
//! whole batch (conv2, conv3, and fc1's change per conv3 column), reading every other cell
//! from the stored parent.

use tch::{Device, Kind, Tensor};

use super::first::EdgePatches;
use super::store::{Node, Patch, Rect, Store};
use super::{MaskedCnn, Step};
use crate::cnn::CnnError;

/// The four conv2 outputs under one 2 × 2 pooling window.
const POOL: [(usize, usize); 4] = [(0, 0), (0, 1), (1, 0), (1, 1)];
/// The taps of a 3 × 3 convolution.
const TAPS: [(usize, usize); 9] = [
    (0, 0),
    (0, 1),
    (0, 2),
    (1, 0),
    (1, 1),
    (1, 2),
    (2, 0),
    (2, 1),
    (2, 2),
];

/// The cells of each map that one step changes or reads.
struct Reach {
    /// First-layer cells that conv2's changed cells read.
    a1: Rect,
    /// conv2 cells (before pooling) that change.
    z2: Rect,
    /// Pooled conv2 cells that change.
    a2: Rect,
    /// conv3 cells that change.
    a3: Rect,
}

impl MaskedCnn<'_> {
    /// The child of each step from its stored parent (every parent is in the store).
    pub(super) fn extend(&self, steps: &[Step<'_>]) -> Result<Vec<f64>, CnnError> {
        let _guard = tch::no_grad_guard();
        let store = self.store.borrow();
        let parents: Vec<usize> = steps
            .iter()
            .map(|s| store.find(s.parent).expect("parents are stored first"))
            .collect();
        let reaches: Vec<Reach> = steps.iter().map(|s| self.reach(s)).collect();
        let d = self.deep;

        let rows = self.conv2_rows(steps, &reaches)?;
        let conv2 = [(rows.len() / (9 * self.first.filters), &d.conv2)];
        let (z2, a2): (Vec<Patch>, Vec<Patch>) = self.product(
            &rows,
            9 * self.first.filters,
            &conv2,
            "computing conv2",
            |sums| {
                let mut sums = sums.chunks_exact(d.c2);
                reaches
                    .iter()
                    .zip(&parents)
                    .map(|(reach, &parent)| self.pool(&store, parent, reach, &mut sums))
                    .unzip()
            },
        )?;

        // conv3 is linear before its ReLU: its sums change by conv3's taps on the change of the
        // few conv2 cells that changed, one row per changed conv2 cell.
        let mut rows = Vec::new();
        for ((reach, new), &parent) in reaches.iter().zip(&a2).zip(&parents) {
            for ((r, c), now) in reach.a2.iter().zip(new.values.chunks_exact(d.c2)) {
                let before = store.a2(parent, r, c);
                rows.extend(now.iter().zip(before).map(|(a, b)| a - b));
            }
        }
        let conv3 = [(rows.len() / d.c2, &d.conv3_taps)];
        let z3: Vec<Patch> = self.product(&rows, d.c2, &conv3, "computing conv3", |taps| {
            let mut taps = taps.chunks_exact(9 * d.c3);
            reaches
                .iter()
                .zip(&parents)
                .map(|(reach, &parent)| self.add_taps(&store, parent, reach, &mut taps))
                .collect()
        })?;

        // fc1's sum changes by its weights on each changed conv3 column times that column's
        // change after ReLU: rows grouped by column, one product per column.
        let mut by_column: Vec<Vec<usize>> = vec![Vec::new(); d.cols];
        for (k, reach) in reaches.iter().enumerate() {
            for ks in &mut by_column[reach.a3.c0..reach.a3.c1] {
                ks.push(k);
            }
        }
        let width = d.rows * d.c3;
        let relu = |v: &f32| v.max(0.0);
        let mut rows = Vec::new();
        for (c, ks) in by_column.iter().enumerate() {
            for &k in ks {
                for r in 0..d.rows {
                    match z3[k].get(r, c) {
                        Some(now) => {
                            let before = store.z3(parents[k], r, c);
                            rows.extend(now.iter().zip(before).map(|(a, b)| relu(a) - relu(b)));
                        }
                        None => rows.extend(std::iter::repeat_n(0.0, d.c3)),
                    }
                }
            }
        }
        let mut sums: Vec<Vec<f64>> = parents
            .iter()
            .map(|&p| store.node(p).hidden.clone())
            .collect();
        let blocks: Vec<(usize, &Tensor)> = by_column
            .iter()
            .zip(&d.fc1_columns)
            .filter(|(ks, _)| !ks.is_empty())
            .map(|(ks, w)| (ks.len(), w))
            .collect();
        self.product(&rows, width, &blocks, "computing fc1 changes", |change| {
            for (d, k) in change
                .chunks_exact(d.hidden)
                .zip(by_column.iter().flatten())
            {
                for (s, d) in sums[*k].iter_mut().zip(d) {
                    *s += *d as f64;
                }
            }
        })?;
        let margins = sums.iter().map(|h| self.output(h)).collect();
        drop(store);
        let mut store = self.store.borrow_mut();
        for ((((s, hidden), z2), (a2, z3)), parent) in steps
            .iter()
            .zip(sums)
            .zip(z2)
            .zip(a2.into_iter().zip(z3))
            .zip(parents)
        {
            let node = Node {
                parent: Some(parent),
                z2,
                a2,
                z3,
                hidden,
            };
            store.insert(s.child, node);
        }
        Ok(margins)
    }

    /// conv2's input rows, one per changed conv2 cell (before pooling) of each step: the
    /// 3 × 3 first-layer cells it reads, `[(kr, kc, filter)]`. The first-layer cells on a
    /// coalition's edge are computed for the whole batch at once.
    fn conv2_rows(&self, steps: &[Step<'_>], reaches: &[Reach]) -> Result<Vec<f32>, CnnError> {
        let mut sources = Vec::new();
        let mut edges = EdgePatches::default();
        let mut starts = Vec::with_capacity(steps.len());
        for (s, reach) in steps.iter().zip(reaches) {
            starts.push(sources.len());
            self.first
                .sources(s.child, reach.a1, &mut edges, &mut sources);
        }
        let edge_values = self.first.edge_values(&edges)?;
        let (f, rows, cols) = (self.first.filters, self.first.rows, self.first.cols);
        let zeros = vec![0f32; f];
        let mut out = Vec::new();
        for (reach, &start) in reaches.iter().zip(&starts) {
            let a1 = reach.a1;
            for (y, x) in reach.z2.iter() {
                for (kr, kc) in TAPS {
                    let (i, j) = ((2 * y + kr).wrapping_sub(1), (2 * x + kc).wrapping_sub(1));
                    out.extend_from_slice(if i < rows && j < cols {
                        let at = start + (i - a1.r0) * a1.width() + j - a1.c0;
                        self.first.value(sources[at], &edge_values)
                    } else {
                        &zeros
                    });
                }
            }
        }
        Ok(out)
    }

    /// A step's new conv2 cells from their sums (bias not yet added), and its pooled cells:
    /// the max over new sums where they changed and the parent's elsewhere, then ReLU.
    fn pool<'s>(
        &self,
        store: &Store,
        parent: usize,
        reach: &Reach,
        sums: &mut impl Iterator<Item = &'s [f32]>,
    ) -> (Patch, Patch) {
        let c2 = self.deep.c2;
        let mut z2 = Patch::empty(reach.z2, c2);
        for cell in sums.take(reach.z2.cells()) {
            let biased = cell.iter().zip(&self.deep.conv2_bias).map(|(v, b)| v + b);
            z2.values.extend(biased);
        }
        let mut a2 = Patch::empty(reach.a2, c2);
        let mut max = vec![f32::MIN; c2];
        for (y2, q) in reach.a2.iter() {
            max.fill(f32::MIN);
            for (dy, dx) in POOL {
                let (y, x) = (2 * y2 + dy, 2 * q + dx);
                let z = match z2.get(y, x) {
                    Some(z) => z,
                    None => store.z2(parent, y, x),
                };
                for (m, v) in max.iter_mut().zip(z) {
                    *m = m.max(*v);
                }
            }
            a2.values.extend(max.iter().map(|m| m.max(0.0)));
        }
        (z2, a2)
    }

    /// A step's changed conv3 sums: the parent's plus what each changed conv2 cell adds
    /// through each of conv3's taps (`taps`: one row of nine taps per changed conv2 cell).
    fn add_taps<'s>(
        &self,
        store: &Store,
        parent: usize,
        reach: &Reach,
        taps: &mut impl Iterator<Item = &'s [f32]>,
    ) -> Patch {
        let (rows, cols, c3) = (self.deep.rows, self.deep.cols, self.deep.c3);
        let mut z = Patch::empty(reach.a3, c3);
        for (r, c) in reach.a3.iter() {
            z.values.extend_from_slice(store.z3(parent, r, c));
        }
        for ((rr, cc), cell) in reach.a2.iter().zip(taps) {
            for (t, (kr, kc)) in TAPS.into_iter().enumerate() {
                // Tap (kr, kc) of output (r, c) reads input (r + kr − 1, c + kc − 1).
                let (r, c) = ((rr + 1).wrapping_sub(kr), (cc + 1).wrapping_sub(kc));
                if r < rows && c < cols {
                    let tap = &cell[t * c3..(t + 1) * c3];
                    for (v, t) in z.get_mut(r, c).iter_mut().zip(tap) {
                        *v += t;
                    }
                }
            }
        }
        z
    }

    /// A `k`-wide row-major matrix, cut into blocks of rows that each multiply their own
    /// weights `[k, out]`; `read` gets the products, block after block, row-major.
    ///
    /// The matrices are large (tens of MB per window), so on the CPU they are neither copied
    /// into LibTorch nor out of it.
    fn product<T>(
        &self,
        rows: &[f32],
        k: usize,
        blocks: &[(usize, &Tensor)],
        what: &str,
        read: impl FnOnce(&[f32]) -> T,
    ) -> Result<T, CnnError> {
        let m = rows.len() / k;
        if m == 0 {
            return Ok(read(&[]));
        }
        let failed = |e: tch::TchError| CnnError::Torch {
            context: what.into(),
            error: e.to_string(),
        };
        assert_eq!(
            blocks.iter().map(|b| b.0).sum::<usize>(),
            m,
            "blocks cover the rows"
        );
        // SAFETY: `rows` holds m·k initialised f32s, outlives `input` (dropped at the end of
        // this function) and is only read while it lives.
        let input = unsafe {
            Tensor::from_blob(
                rows.as_ptr().cast(),
                &[m as i64, k as i64],
                &[],
                Kind::Float,
                Device::Cpu,
            )
        }
        .to_device(self.device);
        let mut start = 0;
        let mut products = Vec::with_capacity(blocks.len());
        for &(n, weights) in blocks {
            products.push(
                input
                    .narrow(0, start, n as i64)
                    .f_mm(weights)
                    .map_err(failed)?,
            );
            start += n as i64;
        }
        let out = match products.len() {
            1 => products.pop().expect("one block"),
            _ => Tensor::f_cat(&products, 0).map_err(failed)?,
        }
        .to_device(Device::Cpu)
        .to_kind(Kind::Float)
        .contiguous();
        // SAFETY: `out` is a contiguous f32 tensor on the CPU with numel() values, alive until
        // `read` returns.
        let values =
            unsafe { std::slice::from_raw_parts(out.data_ptr() as *const f32, out.numel()) };
        Ok(read(values))
    }

    /// The cells a step's rectangle reaches in each map.
    fn reach(&self, s: &Step<'_>) -> Reach {
        let rows = Axis::new(s.rows, self.first.rows, self.deep.rows);
        let cols = Axis::new(s.cols, self.first.cols, self.deep.cols);
        let rect = |r: (usize, usize), c: (usize, usize)| Rect {
            r0: r.0,
            r1: r.1,
            c0: c.0,
            c1: c.1,
        };
        let a2 = rect(rows.pooled, cols.pooled);
        Reach {
            a1: rect(rows.reads, cols.reads),
            z2: rect(rows.conv, cols.conv),
            a2,
            a3: a2.grown(self.deep.rows, self.deep.cols),
        }
    }
}

/// Along one axis, for input pixels `lo..hi` (half-open ranges throughout): the conv2 cells
/// that change before and after pooling, and the first-layer cells the changed conv2 cells
/// read. A first-layer cell j sees pixels 2j−1..=2j+2; a conv2 cell x sees first-layer cells
/// 2x−1..=2x+1; a pooled cell q pools conv2 cells 2q and 2q+1.
struct Axis {
    reads: (usize, usize),
    conv: (usize, usize),
    pooled: (usize, usize),
}

impl Axis {
    /// `first`: first-layer cells along the axis; `pooled`: pooled conv2 cells.
    fn new((lo, hi): (usize, usize), first: usize, pooled: usize) -> Self {
        let j_lo = lo.saturating_sub(2).div_ceil(2).min(first - 1);
        let j_hi = (hi / 2).min(first - 1);
        let x_lo = j_lo.saturating_sub(1).div_ceil(2).min(2 * pooled - 1);
        let x_hi = j_hi.div_ceil(2).min(2 * pooled - 1).max(x_lo);
        Axis {
            reads: ((2 * x_lo).saturating_sub(1), (2 * x_hi + 2).min(first)),
            conv: (x_lo, x_hi + 1),
            pooled: (x_lo / 2, x_hi / 2 + 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Axis;

    #[test]
    fn reach_covers_every_cell_that_sees_the_pixels() {
        // 153 input columns → 76 first-layer cells → 38 conv2 cells → 19 pooled.
        for lo in 0..153 {
            for hi in lo + 1..=(lo + 12).min(153) {
                let axis = Axis::new((lo, hi), 76, 19);
                let sees = |first: usize, last: usize| {
                    // Input pixels of first-layer cells first..=last.
                    let (p0, p1) = ((2 * first).saturating_sub(1), 2 * last + 2);
                    p0 < hi && lo <= p1
                };
                for x in 0..38usize {
                    let (j0, j1) = ((2 * x).saturating_sub(1), (2 * x + 1).min(75));
                    assert_eq!(sees(j0, j1), (axis.conv.0..axis.conv.1).contains(&x));
                }
                for q in 0..19usize {
                    let (j0, j1) = ((4 * q).saturating_sub(1), (4 * q + 3).min(75));
                    assert_eq!(
                        sees(j0, j1),
                        (axis.pooled.0..axis.pooled.1).contains(&q),
                        "pixels {lo}..{hi}, cell {q}"
                    );
                }
                let (x0, x1) = axis.conv;
                assert_eq!(axis.reads, ((2 * x0).saturating_sub(1), (2 * x1).min(76)));
            }
        }
    }
}
