//! The paper's 1-D CNN (Laurenti et al., Nat. Commun. 2024) on raw `(3, 2500)` waveforms, layer
//! for layer and with its PyTorch parameter names (`conv1`…`conv7`, `BatchNorm1`…`BatchNorm7`,
//! `layer_out`), so a state_dict moves between PyTorch and quakelens unchanged.
//!
//! Seven blocks of Conv1d (no padding) → BatchNorm1d → MaxPool1d(3, stride 1) → ReLU, then
//! AvgPool1d over the 1,215 steps left of 2,500, Dropout 0.3, Linear 256 → classes. In front,
//! each channel is scaled to unit L2 norm over time (`F.normalize(x, dim=-1)`, ε 1e-12).

use tch::nn::{self, Module, ModuleT};
use tch::Tensor;

/// Model input `[channels, samples]`: 25 s of three components at 100 Hz.
pub const WAVEFORM_SHAPE: [i64; 2] = [3, 2500];
/// `(in, out, kernel, stride)` of conv1…conv7.
pub const BLOCKS: [(i64, i64, i64, i64); 7] = [
    (3, 32, 7, 1),
    (32, 64, 7, 2),
    (64, 64, 5, 1),
    (64, 64, 5, 1),
    (64, 128, 5, 1),
    (128, 256, 3, 1),
    (256, 256, 3, 1),
];
const POOL: i64 = 3;
const DROPOUT: f64 = 0.3;
const BN_EPS: f64 = 1e-5;
/// `F.normalize`'s default ε: a silent channel stays zero instead of dividing by zero.
const NORM_EPS: f64 = 1e-12;

/// Steps left after the seven blocks for `samples` input samples (1,215 for 2,500), or `None`
/// when the input is too short for the network.
pub fn steps_after_blocks(samples: i64) -> Option<i64> {
    let mut n = samples;
    for &(_, _, k, s) in &BLOCKS {
        if n < k {
            return None;
        }
        n = (n - k) / s + 1 - (POOL - 1);
        if n < 1 {
            return None;
        }
    }
    Some(n)
}

/// The paper's average-pool kernel: every step left for its 2,500-sample input.
pub fn avg_pool_kernel() -> i64 {
    steps_after_blocks(WAVEFORM_SHAPE[1]).expect("the paper's input fits its network")
}

/// Each channel of `[N, C, T]` scaled to unit L2 norm over time.
pub fn unit_norm(xs: &Tensor) -> Tensor {
    let norm = xs
        .square()
        .sum_dim_intlist(-1, true, tch::Kind::Float)
        .sqrt()
        .clamp_min(NORM_EPS);
    xs / norm
}

/// The trainable network (batch norm and dropout in training or eval mode).
#[derive(Debug)]
pub struct Conv1dNet {
    pub classes: i64,
    pub convs: Vec<nn::Conv1D>,
    pub norms: Vec<nn::BatchNorm>,
    pub layer_out: nn::Linear,
}

impl Conv1dNet {
    pub fn new(vs: &nn::Path, classes: i64) -> Self {
        let mut convs = Vec::with_capacity(BLOCKS.len());
        let mut norms = Vec::with_capacity(BLOCKS.len());
        for (i, &(cin, cout, k, stride)) in BLOCKS.iter().enumerate() {
            let cfg = nn::ConvConfig {
                stride,
                ..Default::default()
            };
            convs.push(nn::conv1d(vs / format!("conv{}", i + 1), cin, cout, k, cfg));
            norms.push(nn::batch_norm1d(
                vs / format!("BatchNorm{}", i + 1),
                cout,
                Default::default(),
            ));
        }
        let last = BLOCKS[BLOCKS.len() - 1].1;
        Self {
            classes,
            convs,
            norms,
            layer_out: nn::linear(vs / "layer_out", last, classes, Default::default()),
        }
    }
}

impl ModuleT for Conv1dNet {
    /// Logits `[N, classes]` for raw waveforms `[N, 3, 2500]` (normalised here).
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut xs = unit_norm(xs);
        for (conv, bn) in self.convs.iter().zip(&self.norms) {
            xs = bn
                .forward_t(&conv.forward(&xs), train)
                .max_pool1d([POOL], [1], [0], [1], false)
                .relu();
        }
        let k = avg_pool_kernel();
        xs.avg_pool1d([k], [k], [0], false, true)
            .flatten(1, -1)
            .dropout(DROPOUT, train)
            .apply(&self.layer_out)
    }
}

/// The same network for inference: batch norm folded into each convolution
/// (`w·γ/√(σ²+ε)`, `(b−μ)·γ/√(σ²+ε)+β`), exact because in eval mode batch norm is an affine
/// map applied directly to the convolution's output; dropout is the identity and is dropped.
#[derive(Debug)]
pub struct FoldedConv1d {
    classes: i64,
    convs: Vec<(Tensor, Tensor, i64)>,
    head: (Tensor, Tensor),
}

impl FoldedConv1d {
    pub fn new(net: &Conv1dNet) -> Self {
        let _guard = tch::no_grad_guard();
        let convs = net
            .convs
            .iter()
            .zip(&net.norms)
            .zip(&BLOCKS)
            .map(|((conv, bn), &(_, _, _, stride))| {
                let gamma = bn.ws.as_ref().expect("affine batch norm");
                let beta = bn.bs.as_ref().expect("affine batch norm");
                let scale = gamma / (&bn.running_var + BN_EPS).sqrt();
                let weight = (&conv.ws * scale.view([-1, 1, 1])).contiguous();
                let bias = match &conv.bs {
                    Some(b) => (b - &bn.running_mean) * &scale + beta,
                    None => (-&bn.running_mean) * &scale + beta,
                };
                (weight, bias.contiguous(), stride)
            })
            .collect();
        let head = (
            net.layer_out.ws.detach().copy(),
            net.layer_out
                .bs
                .as_ref()
                .expect("linear bias")
                .detach()
                .copy(),
        );
        Self {
            classes: net.classes,
            convs,
            head,
        }
    }

    pub fn classes(&self) -> i64 {
        self.classes
    }

    /// Logits `[N, classes]` for raw waveforms `[N, 3, 2500]`.
    pub fn forward(&self, xs: &Tensor) -> Tensor {
        let mut xs = unit_norm(xs);
        for (w, b, stride) in &self.convs {
            xs = xs
                .conv1d(w, Some(b), [*stride], [0], [1], 1)
                .max_pool1d([POOL], [1], [0], [1], false)
                .relu_();
        }
        let k = avg_pool_kernel();
        xs.avg_pool1d([k], [k], [0], false, true)
            .flatten(1, -1)
            .linear(&self.head.0, Some(&self.head.1))
    }

    pub fn to_device(&self, device: tch::Device) -> Self {
        let mv = |t: &Tensor| t.to_device(device);
        Self {
            classes: self.classes,
            convs: self
                .convs
                .iter()
                .map(|(w, b, s)| (mv(w), mv(b), *s))
                .collect(),
            head: (mv(&self.head.0), mv(&self.head.1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn the_paper_averages_1215_steps() {
        assert_eq!(avg_pool_kernel(), 1215);
        assert_eq!(steps_after_blocks(30), None);
    }

    #[test]
    fn folded_network_equals_eval_mode_network() {
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = Conv1dNet::new(&vs.root(), 4);
        let x = Tensor::randn([3, 3, 2500], (Kind::Float, Device::Cpu));
        for _ in 0..3 {
            let _ = net.forward_t(&(&x * 2.0 + 1.0), true);
        }
        let _g = tch::no_grad_guard();
        let want = net.forward_t(&x, false);
        let got = FoldedConv1d::new(&net).forward(&x);
        assert_eq!(got.size(), vec![3, 4]);
        let err = f64::try_from((&got - &want).abs().max()).unwrap();
        assert!(err < 1e-4, "folded differs by {err}");
    }

    #[test]
    fn channels_are_scaled_to_unit_norm_and_silence_stays_zero() {
        let x = Tensor::from_slice(&[3.0f32, 4.0, 0.0, 0.0]).view([1, 2, 2]);
        let y = Vec::<f32>::try_from(unit_norm(&x).flatten(0, -1)).unwrap();
        assert_eq!(y, vec![0.6, 0.8, 0.0, 0.0]);
    }
}
