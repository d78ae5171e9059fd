//! The study's CNN2D (Laurenti et al. 2024), layer for layer, with PyTorch's parameter names so
//! weights move between PyTorch and quakelens unchanged.
//!
//! conv1 3→32 k3 p1, BN, maxpool 2, ReLU → conv2 32→64 k3 s2 p1, BN, maxpool 2, ReLU →
//! conv3 64→128 k3 p1, BN, ReLU → flatten → fc1 128, ReLU → fc2 2 (foreshock, aftershock).
//! In front sits a per-channel standardisation whose mean/std are learnt from the training set
//! and stored with the weights (`input_norm.mean`, `input_norm.std`).

use tch::nn::{self, Module, ModuleT};
use tch::Tensor;

/// Model input `[channels, freqs, frames]`: the lake's log-spectrogram.
pub const INPUT_SHAPE: [i64; 3] = [3, 33, 153];
/// Output classes, in logit order.
pub const CLASSES: [&str; 2] = ["foreshock", "aftershock"];
const BN_EPS: f64 = 1e-5;

/// Height/width after the conv/pool stack: pool ⌊/2⌋, stride-2 conv ⌊(n−1)/2⌋+1, pool ⌊/2⌋.
pub fn feature_map(h: i64, w: i64) -> (i64, i64) {
    let stage = |n: i64| ((n / 2 - 1) / 2 + 1) / 2;
    (stage(h), stage(w))
}

pub fn flat_dim(input: [i64; 3]) -> i64 {
    let (h, w) = feature_map(input[1], input[2]);
    128 * h * w
}

/// The trainable network (batch norm in training or eval mode).
#[derive(Debug)]
pub struct Cnn2d {
    pub input: [i64; 3],
    pub norm_mean: Tensor,
    pub norm_std: Tensor,
    pub conv1: nn::Conv2D,
    pub bn1: nn::BatchNorm,
    pub conv2: nn::Conv2D,
    pub bn2: nn::BatchNorm,
    pub conv3: nn::Conv2D,
    pub bn3: nn::BatchNorm,
    pub fc1: nn::Linear,
    pub fc2: nn::Linear,
}

impl Cnn2d {
    pub fn new(vs: &nn::Path, input: [i64; 3]) -> Self {
        let conv = |name: &str, i: i64, o: i64, stride: i64| {
            nn::conv2d(
                vs / name,
                i,
                o,
                3,
                nn::ConvConfig {
                    stride,
                    padding: 1,
                    ..Default::default()
                },
            )
        };
        let bn = |name: &str, c: i64| nn::batch_norm2d(vs / name, c, Default::default());
        let norm = vs / "input_norm";
        Self {
            input,
            norm_mean: norm.zeros_no_train("mean", &[input[0]]),
            norm_std: norm.ones_no_train("std", &[input[0]]),
            conv1: conv("conv1", input[0], 32, 1),
            bn1: bn("bn1", 32),
            conv2: conv("conv2", 32, 64, 2),
            bn2: bn("bn2", 64),
            conv3: conv("conv3", 64, 128, 1),
            bn3: bn("bn3", 128),
            fc1: nn::linear(vs / "fc1", flat_dim(input), 128, Default::default()),
            fc2: nn::linear(vs / "fc2", 128, 2, Default::default()),
        }
    }

    /// Standardises `[N, C, H, W]` input with the stored per-channel statistics.
    pub fn normalize(&self, xs: &Tensor) -> Tensor {
        let c = self.input[0];
        (xs - self.norm_mean.view([1, c, 1, 1])) / self.norm_std.view([1, c, 1, 1])
    }
}

impl ModuleT for Cnn2d {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let xs = self.normalize(xs);
        let xs = self
            .bn1
            .forward_t(&self.conv1.forward(&xs), train)
            .max_pool2d_default(2)
            .relu();
        let xs = self
            .bn2
            .forward_t(&self.conv2.forward(&xs), train)
            .max_pool2d_default(2)
            .relu();
        let xs = self.bn3.forward_t(&self.conv3.forward(&xs), train).relu();
        xs.flatten(1, -1).apply(&self.fc1).relu().apply(&self.fc2)
    }
}

/// The same network for inference only: batch norm folded into the convolutions
/// (`w·γ/√(σ²+ε)`, `(b−μ)·γ/√(σ²+ε)+β`), three fewer passes over the activations.
#[derive(Debug)]
pub struct FoldedCnn2d {
    input: [i64; 3],
    norm_mean: Tensor,
    norm_std: Tensor,
    convs: [(Tensor, Tensor, i64); 3],
    fc1: (Tensor, Tensor),
    fc2: (Tensor, Tensor),
}

fn fold(conv: &nn::Conv2D, bn: &nn::BatchNorm, stride: i64) -> (Tensor, Tensor, i64) {
    let _guard = tch::no_grad_guard();
    let gamma = bn.ws.as_ref().expect("affine batch norm");
    let beta = bn.bs.as_ref().expect("affine batch norm");
    // PyTorch's and tch's default ε (BatchNormConfig::default()).
    let scale = gamma / (&bn.running_var + BN_EPS).sqrt();
    let weight = &conv.ws * scale.view([-1, 1, 1, 1]);
    let bias = match &conv.bs {
        Some(b) => (b - &bn.running_mean) * &scale + beta,
        None => (-&bn.running_mean) * &scale + beta,
    };
    (channels_last(&weight), bias.contiguous(), stride)
}

/// The same values laid out NHWC (strides only; the logical shape stays NCHW): LibTorch's
/// oneDNN convolutions run faster on it than on NCHW.
fn channels_last(t: &Tensor) -> Tensor {
    t.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

impl FoldedCnn2d {
    pub fn new(net: &Cnn2d) -> Self {
        let _guard = tch::no_grad_guard();
        let linear = |l: &nn::Linear| {
            (
                l.ws.detach().copy(),
                l.bs.as_ref().expect("linear bias").detach().copy(),
            )
        };
        Self {
            input: net.input,
            norm_mean: net.norm_mean.detach().copy(),
            norm_std: net.norm_std.detach().copy(),
            convs: [
                fold(&net.conv1, &net.bn1, 1),
                fold(&net.conv2, &net.bn2, 2),
                fold(&net.conv3, &net.bn3, 1),
            ],
            fc1: linear(&net.fc1),
            fc2: linear(&net.fc2),
        }
    }

    /// Logits `[N, 2]` for input `[N, C, H, W]`.
    pub fn forward(&self, xs: &Tensor) -> Tensor {
        self.after_first_layer(self.first_layer(&self.standardize(xs)))
    }

    /// The stored per-channel standardisation; the first convolution's zero padding applies
    /// to its output.
    pub(crate) fn standardize(&self, xs: &Tensor) -> Tensor {
        let c = self.input[0];
        (xs - self.norm_mean.view([1, c, 1, 1])) / self.norm_std.view([1, c, 1, 1])
    }

    /// conv1 (batch norm folded), max-pool 2, ReLU.
    pub(crate) fn first_layer(&self, xs: &Tensor) -> Tensor {
        self.layer(0, xs)
    }

    /// Convolution `i` (batch norm folded), its pooling where it has one, and ReLU.
    pub(crate) fn layer(&self, i: usize, xs: &Tensor) -> Tensor {
        let xs = self.convolve(i, xs);
        let mut xs = if i < 2 { xs.max_pool2d_default(2) } else { xs };
        xs.relu_()
    }

    /// Convolution `i` alone (batch norm folded): no pooling, no ReLU.
    pub(crate) fn convolve(&self, i: usize, xs: &Tensor) -> Tensor {
        let (w, b, stride) = &self.convs[i];
        xs.conv2d(w, Some(b), [*stride, *stride], [1, 1], [1, 1], 1)
    }

    /// Everything after the first layer: `[N, 32, H/2, W/2]` → logits `[N, 2]`.
    pub(crate) fn after_first_layer(&self, a1: Tensor) -> Tensor {
        let xs = self.layer(2, &self.layer(1, &a1));
        let xs = xs
            .flatten(1, -1)
            .linear(&self.fc1.0, Some(&self.fc1.1))
            .relu_();
        xs.linear(&self.fc2.0, Some(&self.fc2.1))
    }

    /// The first convolution's folded weight `[out, in, 3, 3]` and bias `[out]`.
    pub(crate) fn first_conv(&self) -> (&Tensor, &Tensor) {
        self.conv(0)
    }

    /// Convolution `i`'s folded weight and bias.
    pub(crate) fn conv(&self, i: usize) -> (&Tensor, &Tensor) {
        (&self.convs[i].0, &self.convs[i].1)
    }

    /// fc1 and fc2 as (weight, bias).
    pub(crate) fn head(&self) -> [&(Tensor, Tensor); 2] {
        [&self.fc1, &self.fc2]
    }

    pub(crate) fn input_shape(&self) -> [i64; 3] {
        self.input
    }

    pub fn to_device(&self, device: tch::Device) -> Self {
        let mv = |t: &Tensor| t.to_device(device);
        Self {
            input: self.input,
            norm_mean: mv(&self.norm_mean),
            norm_std: mv(&self.norm_std),
            convs: self.convs.each_ref().map(|(w, b, s)| (mv(w), mv(b), *s)),
            fc1: (mv(&self.fc1.0), mv(&self.fc1.1)),
            fc2: (mv(&self.fc2.0), mv(&self.fc2.1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattened_size_matches_the_study() {
        assert_eq!(feature_map(33, 153), (4, 19));
        assert_eq!(flat_dim(INPUT_SHAPE), 128 * 4 * 19);
    }

    #[test]
    fn folded_network_equals_eval_mode_network() {
        tch::manual_seed(3);
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let net = Cnn2d::new(&vs.root(), INPUT_SHAPE);
        let x = Tensor::randn([4, 3, 33, 153], (tch::Kind::Float, tch::Device::Cpu));
        // Give batch norm non-trivial running statistics first.
        for _ in 0..3 {
            let _ = net.forward_t(&(&x * 2.0 + 1.0), true);
        }
        let _g = tch::no_grad_guard();
        let want = net.forward_t(&x, false);
        let got = FoldedCnn2d::new(&net).forward(&x);
        assert_eq!(got.size(), vec![4, 2]);
        let err = f64::try_from((&got - &want).abs().max()).unwrap();
        assert!(err < 1e-4, "folded differs by {err}");
    }
}
