//! Telea's fast-marching inpainting of 8-bit 3-channel images, as OpenCV's
//! `cv2.inpaint(img, mask, 3, cv2.INPAINT_TELEA)` computes it (the masker of shap's
//! `Image("inpaint_telea", …)`, which the study explained its CNN with): pixels are filled in
//! the order a fast-marching front reaches them from the known region, each as a weighted mean
//! of the known pixels within the radius plus a gradient term normalised to unit length.
//! OpenCV's arithmetic is kept (f32 weights, the clamped rows and columns its image gradients
//! read at the edges, its rounding of `value + 0.5`), so the bytes agree with those of the
//! OpenCV that pip installs (opencv-python-headless 4.10 and 5.0 checked; much older releases
//! left masked pixels of the first row and column unchanged and read edge values shifted).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use rayon::prelude::*;

use crate::image::{Coalition, Game, ModelFn, Shape};

/// Cell states of the fast-marching grid.
const KNOWN: u8 = 0;
const BAND: u8 = 1;
const INSIDE: u8 = 2;
const CHANGE: u8 = 3;

/// A grid one cell larger than the image on every side (OpenCV's layout).
struct Grid<T> {
    rows: usize,
    cols: usize,
    v: Vec<T>,
}

impl<T: Copy> Grid<T> {
    fn new(rows: usize, cols: usize, fill: T) -> Self {
        Self {
            rows,
            cols,
            v: vec![fill; rows * cols],
        }
    }
    #[inline]
    fn get(&self, i: usize, j: usize) -> T {
        self.v[i * self.cols + j]
    }
    #[inline]
    fn set(&mut self, i: usize, j: usize, x: T) {
        self.v[i * self.cols + j] = x;
    }
}

/// A queue popping the smallest time first, and among equal times the first pushed (the order
/// of OpenCV's sorted list).
#[derive(Default)]
struct Front {
    heap: BinaryHeap<Entry>,
    pushed: u64,
}

struct Entry {
    t: f32,
    seq: u64,
    i: usize,
    j: usize,
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    /// Reversed: BinaryHeap is a max-heap.
    fn cmp(&self, o: &Self) -> Ordering {
        o.t.total_cmp(&self.t).then(o.seq.cmp(&self.seq))
    }
}

impl Front {
    fn push(&mut self, i: usize, j: usize, t: f32) {
        self.heap.push(Entry {
            t,
            seq: self.pushed,
            i,
            j,
        });
        self.pushed += 1;
    }
    fn pop(&mut self) -> Option<(usize, usize)> {
        self.heap.pop().map(|e| (e.i, e.j))
    }
}

/// One solution of the eikonal equation from two neighbours (OpenCV's `FastMarching_solve`).
fn solve(i1: usize, j1: usize, i2: usize, j2: usize, f: &Grid<u8>, t: &Grid<f32>) -> f32 {
    let (a11, a22) = (t.get(i1, j1) as f64, t.get(i2, j2) as f64);
    let m12 = a11.min(a22);
    let known1 = f.get(i1, j1) != INSIDE;
    let known2 = f.get(i2, j2) != INSIDE;
    let sol = match (known1, known2) {
        (true, true) if (a11 - a22).abs() >= 1.0 => 1.0 + m12,
        (true, true) => (a11 + a22 + (2.0 - (a11 - a22) * (a11 - a22)).sqrt()) * 0.5,
        (true, false) => 1.0 + a11,
        (false, true) => 1.0 + a22,
        (false, false) => 1.0 + m12,
    };
    sol as f32
}

fn min4(a: f32, b: f32, c: f32, d: f32) -> f32 {
    let ab = if a < b { a } else { b };
    let cd = if c < d { c } else { d };
    if ab < cd {
        ab
    } else {
        cd
    }
}

/// The arrival time at (i, j) from its four neighbour pairs.
fn arrival(i: usize, j: usize, f: &Grid<u8>, t: &Grid<f32>) -> f32 {
    min4(
        solve(i - 1, j, i, j - 1, f, t),
        solve(i + 1, j, i, j - 1, f, t),
        solve(i - 1, j, i, j + 1, f, t),
        solve(i + 1, j, i, j + 1, f, t),
    )
}

/// The four neighbours in OpenCV's order: up, left, down, right.
fn neighbours(i: usize, j: usize) -> [(usize, usize); 4] {
    [(i - 1, j), (i, j - 1), (i + 1, j), (i, j + 1)]
}

/// Dilates the nonzero cells of `g` by a square of half-width `r` (cross when `cross`).
fn dilate(g: &Grid<u8>, r: usize, cross: bool) -> Grid<u8> {
    let mut out = Grid::new(g.rows, g.cols, 0u8);
    for i in 0..g.rows {
        for j in 0..g.cols {
            let mut m = 0;
            for di in -(r as isize)..=r as isize {
                for dj in -(r as isize)..=r as isize {
                    if cross && di != 0 && dj != 0 {
                        continue;
                    }
                    let (a, b) = (i as isize + di, j as isize + dj);
                    if a >= 0 && b >= 0 && (a as usize) < g.rows && (b as usize) < g.cols {
                        m = m.max(g.get(a as usize, b as usize));
                    }
                }
            }
            out.set(i, j, m);
        }
    }
    out
}

fn zero_border(g: &mut Grid<u8>) {
    for j in 0..g.cols {
        g.set(0, j, 0);
        g.set(g.rows - 1, j, 0);
    }
    for i in 0..g.rows {
        g.set(i, 0, 0);
        g.set(i, g.cols - 1, 0);
    }
}

/// Inpaints the pixels where `masked` is true in `image` (`height × width × 3` bytes, HWC), in
/// place, with neighbourhood radius `radius` (shap uses 3).
pub fn inpaint_telea(
    image: &mut [u8],
    masked: &[bool],
    height: usize,
    width: usize,
    radius: usize,
) {
    assert_eq!(image.len(), height * width * 3, "image is not H × W × 3");
    assert_eq!(masked.len(), height * width, "mask is not H × W");
    if height < 2 || width < 2 {
        // OpenCV's edge clamping reads outside such images; there is nothing to march over.
        return;
    }
    let range = radius.clamp(1, 100) as isize;
    let (er, ec) = (height + 2, width + 2);
    let mut mask = Grid::new(er, ec, KNOWN);
    for (p, _) in masked.iter().enumerate().filter(|(_, &m)| m) {
        mask.set(p / width + 1, p % width + 1, INSIDE);
    }
    zero_border(&mut mask);
    let mut t = Grid::new(er, ec, 1.0e6f32);
    let mut band = dilate(&mask, 1, true);
    for (b, m) in band.v.iter_mut().zip(&mask.v) {
        *b = b.saturating_sub(*m);
    }
    zero_border(&mut band);
    let mut heap = Front::default();
    for i in 0..er {
        for j in 0..ec {
            if band.get(i, j) != 0 {
                heap.push(i, j, 0.0);
                t.set(i, j, 0.0);
            }
        }
    }
    // Distances outward from the band over the known ring within the radius, negated.
    let mut ring = dilate(&mask, range as usize, false);
    for (o, m) in ring.v.iter_mut().zip(&mask.v) {
        *o = o.saturating_sub(*m);
    }
    let mut outer = Front::default();
    for i in 0..er {
        for j in 0..ec {
            if band.get(i, j) != 0 {
                outer.push(i, j, 0.0);
            }
        }
    }
    for (o, b) in ring.v.iter_mut().zip(&band.v) {
        *o = o.saturating_sub(*b);
    }
    zero_border(&mut ring);
    while let Some((ii, jj)) = outer.pop() {
        ring.set(ii, jj, CHANGE);
        for (i, j) in neighbours(ii, jj) {
            if i == 0 || j == 0 || i > ring.rows || j > ring.cols {
                continue;
            }
            if ring.get(i, j) == INSIDE {
                let dist = arrival(i, j, &ring, &t);
                t.set(i, j, dist);
                ring.set(i, j, BAND);
                outer.push(i, j, dist);
            }
        }
    }
    for k in 0..ring.v.len() {
        if ring.v[k] == CHANGE {
            t.v[k] = -t.v[k];
        }
    }

    let px = |img: &[u8], r: usize, c: usize, ch: usize| img[(r * width + c) * 3 + ch] as f32;
    let r2 = range * range;
    while let Some((ii, jj)) = heap.pop() {
        mask.set(ii, jj, KNOWN);
        for (i, j) in neighbours(ii, jj) {
            if i == 0 || j == 0 || i > er - 1 || j > ec - 1 || mask.get(i, j) != INSIDE {
                continue;
            }
            let dist = arrival(i, j, &mask, &t);
            t.set(i, j, dist);
            let known = |a: usize, b: usize| mask.get(a, b) != INSIDE;
            let grad_t_x = match (known(i, j + 1), known(i, j - 1)) {
                (true, true) => (t.get(i, j + 1) - t.get(i, j - 1)) * 0.5,
                (true, false) => t.get(i, j + 1) - t.get(i, j),
                (false, true) => t.get(i, j) - t.get(i, j - 1),
                (false, false) => 0.0,
            };
            let grad_t_y = match (known(i + 1, j), known(i - 1, j)) {
                (true, true) => (t.get(i + 1, j) - t.get(i - 1, j)) * 0.5,
                (true, false) => t.get(i + 1, j) - t.get(i, j),
                (false, true) => t.get(i, j) - t.get(i - 1, j),
                (false, false) => 0.0,
            };
            for color in 0..3 {
                let (mut ia, mut jx, mut jy, mut s) = (0f32, 0f32, 0f32, 1.0e-20f32);
                for k in (i as isize - range)..=(i as isize + range) {
                    if k <= 0 || k >= er as isize - 1 {
                        continue;
                    }
                    let k = k as usize;
                    // OpenCV's clamped image rows of grid row k.
                    let km = k - 1 + (k == 1) as usize;
                    let kp = k - 1 - (k == er - 2) as usize;
                    for l in (j as isize - range)..=(j as isize + range) {
                        if l <= 0 || l >= ec as isize - 1 {
                            continue;
                        }
                        let l = l as usize;
                        let (dk, dl) = (k as isize - i as isize, l as isize - j as isize);
                        if !known(k, l) || dk * dk + dl * dl > r2 {
                            continue;
                        }
                        let lm = l - 1 + (l == 1) as usize;
                        let lp = l - 1 - (l == ec - 2) as usize;
                        let (ry, rx) = (
                            (i as isize - k as isize) as f32,
                            (j as isize - l as isize) as f32,
                        );
                        let len = rx * rx + ry * ry;
                        let dst = (1.0 / (len as f64 * (len as f64).sqrt())) as f32;
                        let lev = (1.0 / (1.0 + (t.get(k, l) - t.get(i, j)).abs() as f64)) as f32;
                        let mut dir = rx * grad_t_x + ry * grad_t_y;
                        if dir.abs() <= 0.01 {
                            dir = 0.000001;
                        }
                        let w = (dst * lev * dir).abs();
                        let grad_i_x = match (known(k, l + 1), known(k, l - 1)) {
                            (true, true) => {
                                (px(image, km, lp + 1, color) - px(image, km, lm - 1, color)) * 2.0
                            }
                            (true, false) => {
                                px(image, km, lp + 1, color) - px(image, km, lm, color)
                            }
                            (false, true) => {
                                px(image, km, lp, color) - px(image, km, lm - 1, color)
                            }
                            (false, false) => 0.0,
                        };
                        let grad_i_y = match (known(k + 1, l), known(k - 1, l)) {
                            (true, true) => {
                                (px(image, kp + 1, lm, color) - px(image, km - 1, lm, color)) * 2.0
                            }
                            (true, false) => {
                                px(image, kp + 1, lm, color) - px(image, km, lm, color)
                            }
                            (false, true) => {
                                px(image, kp, lm, color) - px(image, km - 1, lm, color)
                            }
                            (false, false) => 0.0,
                        };
                        ia += w * px(image, k - 1, l - 1, color);
                        jx -= w * (grad_i_x * rx);
                        jy -= w * (grad_i_y * ry);
                        s += w;
                    }
                }
                let sat = ia / s + (jx + jy) / ((jx * jx + jy * jy).sqrt() + 1.0e-20) + 0.5;
                image[((i - 1) * width + (j - 1)) * 3 + color] = saturate_u8(sat);
            }
            mask.set(i, j, BAND);
            heap.push(i, j, dist);
        }
    }
}

/// OpenCV's `saturate_cast<uchar>(float)`: round half to even, clamp to 0..=255.
fn saturate_u8(v: f32) -> u8 {
    if v.is_nan() {
        return 0;
    }
    v.round_ties_even().clamp(0.0, 255.0) as u8
}

/// The 8-bit range shap's Image masker sees images on in the study: one min–max over the whole
/// batch explained together, bytes `floor((v − min) / (max − min) · 255)` (numpy's
/// `astype(np.uint8)`), pixel-major with channels last (`H × W × C`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quantization {
    pub min: f32,
    pub max: f32,
}

impl Quantization {
    /// The range of every finite value of a batch of images; `None` when there is none or all
    /// are equal (nothing to scale by).
    pub fn of_batch<'a>(images: impl IntoIterator<Item = &'a [f32]>) -> Option<Self> {
        let (mut min, mut max) = (f32::INFINITY, f32::NEG_INFINITY);
        for v in images.into_iter().flatten().filter(|v| v.is_finite()) {
            min = min.min(*v);
            max = max.max(*v);
        }
        (min < max).then_some(Self { min, max })
    }

    /// A `C × H × W` image as `H × W × C` bytes (values outside the range clamp to it; NaN is
    /// 0). In f32 and in the order numpy evaluates the study's `(x - min) / (max - min) * 255`
    /// on float32 images, so the truncation lands where the study's did.
    pub fn quantize(&self, x: &[f32], shape: Shape) -> Vec<u8> {
        let (n, c) = (shape.pixels(), shape.channels);
        let span = self.max - self.min;
        let mut out = vec![0u8; x.len()];
        for ch in 0..c {
            for p in 0..n {
                let v = ((x[ch * n + p] - self.min) / span * 255.0).clamp(0.0, 255.0);
                out[p * c + ch] = if v.is_nan() { 0 } else { v as u8 };
            }
        }
        out
    }

    /// `H × W × C` bytes back to a `C × H × W` image on the batch's scale, appended to `out`.
    pub fn dequantize(&self, bytes: &[u8], shape: Shape, out: &mut Vec<f32>) {
        let (n, c) = (shape.pixels(), shape.channels);
        let span = self.max as f64 - self.min as f64;
        for ch in 0..c {
            out.extend(
                (0..n).map(|p| (self.min as f64 + bytes[p * c + ch] as f64 / 255.0 * span) as f32),
            );
        }
    }
}

/// shap's fill when every pixel is removed (OpenCV needs something known): each channel's mean
/// over the image, stored back into the 8-bit image, so truncated.
pub(crate) fn fill_with_channel_means(bytes: &mut [u8]) {
    for ch in 0..3 {
        let (sum, count) = bytes
            .iter()
            .skip(ch)
            .step_by(3)
            .fold((0u64, 0u64), |(s, k), &b| (s + b as u64, k + 1));
        let mean = (sum as f64 / count.max(1) as f64) as u8;
        bytes.iter_mut().skip(ch).step_by(3).for_each(|b| *b = mean);
    }
}

/// The game of a model on inpainted images: each coalition keeps its pixels of the quantised
/// window, OpenCV's Telea inpainting (radius 3, as shap) fills the rest, the model sees the
/// result dequantised. Images are inpainted in parallel.
pub struct Inpainted<'m, 'a> {
    model: &'m mut ModelFn<'a>,
    bytes: Vec<u8>,
    shape: Shape,
    quantization: Quantization,
    images: Vec<f32>,
}

impl<'m, 'a> Inpainted<'m, 'a> {
    /// Inpainting works on three 8-bit channels (OpenCV's and shap's limit); other shapes are
    /// refused when played.
    pub fn new(
        model: &'m mut ModelFn<'a>,
        x: &[f32],
        shape: Shape,
        quantization: Quantization,
    ) -> Self {
        Self {
            model,
            bytes: quantization.quantize(x, shape),
            shape,
            quantization,
            images: Vec::new(),
        }
    }
}

/// The model's input for `coalition`: its pixels of `window` (bytes), the rest inpainted.
fn inpainted(window: &[u8], shape: Shape, q: Quantization, coalition: &Coalition) -> Vec<f32> {
    let Shape { height, width, .. } = shape;
    let removed: Vec<bool> = (0..height * width).map(|p| !coalition.has(p)).collect();
    let mut bytes = window.to_vec();
    if removed.iter().all(|&r| r) {
        fill_with_channel_means(&mut bytes);
    } else if removed.iter().any(|&r| r) {
        inpaint_telea(&mut bytes, &removed, height, width, 3);
    }
    let mut out = Vec::with_capacity(bytes.len());
    q.dequantize(&bytes, shape, &mut out);
    out
}

impl Game for Inpainted<'_, '_> {
    fn play(&mut self, coalitions: &[&Coalition]) -> Result<Vec<f64>, String> {
        if self.shape.channels != 3 {
            return Err(format!(
                "inpainting needs 3 channels, the image has {}",
                self.shape.channels
            ));
        }
        let (window, shape, q) = (&self.bytes, self.shape, self.quantization);
        let images: Vec<Vec<f32>> = coalitions
            .par_iter()
            .map(|c| inpainted(window, shape, q, c))
            .collect();
        self.images.clear();
        images.iter().for_each(|i| self.images.extend_from_slice(i));
        (self.model)(&self.images, coalitions.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_pops_the_earliest_of_equal_times_first() {
        let mut q = Front::default();
        q.push(1, 1, 0.5);
        q.push(2, 2, 0.0);
        q.push(3, 3, 0.5);
        q.push(4, 4, 0.0);
        let order: Vec<usize> = std::iter::from_fn(|| q.pop().map(|(i, _)| i)).collect();
        assert_eq!(order, vec![2, 4, 1, 3]);
    }

    #[test]
    fn a_hole_in_a_flat_image_is_filled_with_its_colour() {
        let (h, w) = (12, 20);
        let mut img: Vec<u8> = (0..h * w).flat_map(|_| [40u8, 120, 250]).collect();
        let mut masked = vec![false; h * w];
        for r in 4..8 {
            for c in 6..14 {
                masked[r * w + c] = true;
                img[(r * w + c) * 3] = 0;
                img[(r * w + c) * 3 + 1] = 0;
                img[(r * w + c) * 3 + 2] = 0;
            }
        }
        inpaint_telea(&mut img, &masked, h, w, 3);
        // The unit gradient term moves a value by at most √2 (its image gradients at the hole's
        // edge read still-unfilled pixels), and OpenCV adds 0.5 before rounding.
        for p in img.chunks(3) {
            for (v, want) in p.iter().zip([40i32, 120, 250]) {
                assert!((*v as i32 - want).abs() <= 2, "{p:?}");
            }
        }
    }

    #[test]
    fn masked_pixels_of_the_first_row_and_column_are_filled_too() {
        let (h, w) = (6, 6);
        let mut img = vec![200u8; h * w * 3];
        let mut masked = vec![false; h * w];
        for p in [2, 3 * w] {
            masked[p] = true; // one in row 0, one in column 0
            img[p * 3..p * 3 + 3].fill(0);
        }
        inpaint_telea(&mut img, &masked, h, w, 3);
        assert!(img.iter().all(|&v| v >= 200), "{img:?}");
    }

    #[test]
    fn quantisation_truncates_on_the_batch_range_and_comes_back_on_its_scale() {
        let shape = Shape {
            channels: 3,
            height: 1,
            width: 2,
        };
        let a = [0.0f32, 1.0, 0.5, 0.25, -1.0, 3.0];
        let b = [0.999f32; 6];
        let q = Quantization::of_batch([&a[..], &b[..]]).unwrap();
        assert_eq!((q.min, q.max), (-1.0, 3.0));
        // Pixel-major, channels last; floor((v + 1) / 4 · 255).
        assert_eq!(q.quantize(&a, shape), vec![63, 95, 0, 127, 79, 255]);
        let mut back = Vec::new();
        q.dequantize(&q.quantize(&a, shape), shape, &mut back);
        for (x, y) in a.iter().zip(&back) {
            assert!(x - y >= 0.0 && x - y < 4.0 / 255.0 + 1e-6, "{x} {y}");
        }
        assert_eq!(Quantization::of_batch([&[2.0f32, 2.0][..]]), None);
    }

    #[test]
    fn every_pixel_removed_is_each_channels_truncated_mean() {
        let mut bytes = vec![1u8, 10, 200, 2, 11, 201];
        fill_with_channel_means(&mut bytes);
        assert_eq!(bytes, vec![1, 10, 200, 1, 10, 200]);
    }

    #[test]
    fn tiny_images_are_left_alone_not_read_out_of_bounds() {
        let mut img = vec![9u8; 3 * 5];
        inpaint_telea(&mut img, &[true; 5], 1, 5, 3);
        assert_eq!(img, vec![9u8; 15]);
    }
}
