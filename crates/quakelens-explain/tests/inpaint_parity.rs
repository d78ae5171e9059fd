//! Telea inpainting against OpenCV itself (`cv2.inpaint`, opencv-python-headless from PyPI):
//! every byte of every image, for the masks shap's partition explainer makes (rectangles of an
//! image split in halves again and again) and for scattered ones.

use quakelens_explain::image::{Coalition, Masker, Region, Shape};
use quakelens_explain::{inpaint::inpaint_telea, inpaint::Quantization, reference};
use quakelens_signal::reference::python_for_tests;

const H: usize = 33;
const W: usize = 153;

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// A spectrogram-like image: smooth bands plus noise, so gradients matter.
fn image(rng: &mut Lcg) -> Vec<u8> {
    let mut v = Vec::with_capacity(H * W * 3);
    for r in 0..H {
        for c in 0..W {
            for ch in 0..3 {
                let smooth =
                    128.0 + 90.0 * ((r as f64 * 0.3 + ch as f64).sin() * (c as f64 * 0.05).cos());
                v.push((smooth + (rng.next() % 40) as f64 - 20.0).clamp(0.0, 255.0) as u8);
            }
        }
    }
    v
}

/// Rectangles like the partition explainer's, some touching the image's edges, and scattered
/// pixels; never every pixel (shap fills an all-masked image with the mean, not OpenCV).
fn mask(rng: &mut Lcg, k: usize) -> Vec<bool> {
    let mut m = vec![false; H * W];
    if k % 4 == 3 {
        for p in m.iter_mut() {
            *p = rng.next().is_multiple_of(3);
        }
        m[0] = false;
        return m;
    }
    for _ in 0..1 + k % 3 {
        let (r0, c0) = ((rng.next() as usize) % H, (rng.next() as usize) % W);
        let (r1, c1) = (
            (r0 + 1 + (rng.next() as usize) % 17).min(H),
            (c0 + 1 + (rng.next() as usize) % 77).min(W),
        );
        for r in r0..r1 {
            for c in c0..c1 {
                m[r * W + c] = true;
            }
        }
    }
    m
}

#[test]
fn telea_inpainting_equals_opencv_byte_for_byte() {
    let Some(py) = python_for_tests() else {
        return;
    };
    let n = 24;
    let mut rng = Lcg(11);
    let images: Vec<Vec<u8>> = (0..n).map(|_| image(&mut rng)).collect();
    let masks: Vec<Vec<bool>> = (0..n).map(|k| mask(&mut rng, k)).collect();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("images.u8"), images.concat()).unwrap();
    let mask_bytes: Vec<u8> = masks.iter().flatten().map(|&m| m as u8 * 255).collect();
    std::fs::write(d.join("masks.u8"), mask_bytes).unwrap();
    let p = |name: &str| d.join(name).display().to_string();
    reference::run(
        &py,
        d,
        "inpaint",
        &[
            p("images.u8"),
            p("masks.u8"),
            p("out.u8"),
            n.to_string(),
            H.to_string(),
            W.to_string(),
            "3".into(),
        ],
    )
    .unwrap();
    let want = std::fs::read(d.join("out.u8")).unwrap();
    assert_eq!(
        want.len(),
        n * H * W * 3,
        "cv2 wrote a different number of bytes"
    );
    let (mut differing, mut filled) = (0, 0);
    for k in 0..n {
        let mut ours = images[k].clone();
        inpaint_telea(&mut ours, &masks[k], H, W, 3);
        let theirs = &want[k * H * W * 3..(k + 1) * H * W * 3];
        filled += masks[k].iter().filter(|&&m| m).count();
        let diff = ours.iter().zip(theirs).filter(|(a, b)| a != b).count();
        if diff > 0 {
            let first = ours.iter().zip(theirs).position(|(a, b)| a != b).unwrap();
            eprintln!(
                "image {k}: {diff} bytes differ, first at pixel ({}, {}) channel {}: ours {} cv2 {}",
                first / 3 / W,
                first / 3 % W,
                first % 3,
                ours[first],
                theirs[first]
            );
        }
        differing += diff;
    }
    eprintln!(
        "Telea inpainting vs cv2.inpaint: {differing} of {} filled bytes differ",
        filled * 3
    );
    assert_eq!(differing, 0);
    // The test must have inpainted something for the equality to mean anything.
    assert!(filled > n * 50);
}

/// The study's masker as the explainers play it (quantise, inpaint the removed pixels, fill an
/// empty coalition with channel means) against shap's own `Image("inpaint_telea")` masker on
/// the same 8-bit window.
#[test]
fn the_inpainting_masker_gives_shaps_masked_images() {
    let Some(py) = python_for_tests() else {
        return;
    };
    let shape = Shape {
        channels: 3,
        height: H,
        width: W,
    };
    let mut rng = Lcg(23);
    // A float window whose quantisation is exact: the bytes themselves on a 0..255 scale.
    let bytes = image(&mut rng);
    let q = Quantization {
        min: 0.0,
        max: 255.0,
    };
    let mut x = vec![0f32; bytes.len()];
    for p in 0..H * W {
        for c in 0..3 {
            x[c * H * W + p] = bytes[p * 3 + c] as f32;
        }
    }
    assert_eq!(q.quantize(&x, shape), bytes);
    let full = Region {
        r0: 0,
        r1: H,
        c0: 0,
        c1: W,
    };
    let mut coalitions = vec![
        Coalition::empty(H * W),
        Coalition::empty(H * W).with(full, W),
    ];
    for k in 0..10 {
        let kept = mask(&mut rng, k);
        let mut c = Coalition::empty(H * W);
        for (p, removed) in kept.iter().enumerate() {
            if !removed {
                c = c.with(
                    Region {
                        r0: p / W,
                        r1: p / W + 1,
                        c0: p % W,
                        c1: p % W + 1,
                    },
                    W,
                );
            }
        }
        coalitions.push(c);
    }
    let mut seen: Vec<f32> = Vec::new();
    let mut record = |images: &[f32], n: usize| -> Result<Vec<f64>, String> {
        seen.extend_from_slice(images);
        Ok(vec![0.0; n])
    };
    let refs: Vec<&Coalition> = coalitions.iter().collect();
    Masker::Inpaint(q)
        .game(&mut record, &x, shape)
        .play(&refs)
        .unwrap();
    let n = coalitions.len();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("images.u8"), bytes.repeat(n)).unwrap();
    let keep: Vec<u8> = coalitions
        .iter()
        .flat_map(|c| (0..H * W).map(move |p| c.has(p) as u8))
        .collect();
    std::fs::write(d.join("keep.u8"), keep).unwrap();
    let p = |name: &str| d.join(name).display().to_string();
    reference::run(
        &py,
        d,
        "image-masker",
        &[
            p("images.u8"),
            p("keep.u8"),
            p("out.u8"),
            n.to_string(),
            H.to_string(),
            W.to_string(),
        ],
    )
    .unwrap();
    let want = std::fs::read(d.join("out.u8")).unwrap();
    assert_eq!(want.len(), n * H * W * 3);
    assert_eq!(seen.len(), n * H * W * 3);
    for k in 0..n {
        let ours = &seen[k * H * W * 3..(k + 1) * H * W * 3];
        let theirs = &want[k * H * W * 3..(k + 1) * H * W * 3];
        let differing = (0..H * W * 3)
            .filter(|&i| {
                let (c, p) = (i / (H * W), i % (H * W));
                ours[i] != theirs[p * 3 + c] as f32
            })
            .count();
        assert_eq!(
            differing, 0,
            "coalition {k}: {differing} values differ from shap's"
        );
    }
}
