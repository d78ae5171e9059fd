//! Batched inference for a model loaded from a file: our own CNN2D (batch norm folded) or a
//! user's TorchScript module.

use std::cell::OnceCell;
use std::path::Path;

use tch::{CModule, Device, Kind, Tensor};

use super::arch::{FoldedCnn2d, INPUT_SHAPE};
use super::file::load_cnn;
use super::masked::StepWeights;
use super::{read_f32, CnnError};
use crate::hash::ModelHash;

/// Output coefficients of the aftershock-minus-foreshock margin.
pub const MARGIN: [f64; 2] = [-1.0, 1.0];

/// Where a model came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum ModelKind {
    /// A quakelens CNN2D file (safetensors).
    Native,
    /// A quakelens CONV1D file: the paper's 1-D CNN on waveforms.
    NativeConv1d,
    /// A TorchScript module traced/scripted in PyTorch; gets the stored spectrograms as they
    /// are (it must do its own normalisation) and must return `[N, 2]` logits.
    TorchScript,
}

impl ModelKind {
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Native => "quakelens-cnn",
            ModelKind::NativeConv1d => "quakelens-conv1d",
            ModelKind::TorchScript => "torchscript",
        }
    }
}

enum Backend {
    /// Our CNN2D, and the forms of its weights that masked coalitions use (made on first use).
    Native(FoldedCnn2d, Box<OnceCell<StepWeights>>),
    TorchScript(CModule),
}

/// One window's score.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CnnScore {
    /// Logits for (foreshock, aftershock).
    pub logits: [f32; 2],
    /// softmax(logits)[1].
    pub p_aftershock: f32,
}

/// A model ready to score windows of shape [`CnnModel::input_shape`].
pub struct CnnModel {
    backend: Backend,
    pub kind: ModelKind,
    pub hash: ModelHash,
    pub device: Device,
    input: [i64; 3],
    /// The spectrograms it takes (`None`: unknown, not checked — TorchScript and version 1
    /// files).
    pub spectrogram: Option<quakelens_signal::spectrogram::SpectrogramInput>,
}

impl CnnModel {
    /// Loads a quakelens CNN file or a TorchScript archive (recognised by its zip signature).
    pub fn load(path: &Path, device: Device) -> Result<Self, CnnError> {
        let bytes = std::fs::read(path).map_err(|error| CnnError::Io {
            path: path.display().to_string(),
            error,
        })?;
        if bytes.starts_with(b"PK\x03\x04") {
            let module = CModule::load_on_device(path, device).map_err(|e| CnnError::Format {
                path: path.display().to_string(),
                reason: format!("TorchScript: {e}"),
            })?;
            let model = Self {
                backend: Backend::TorchScript(module),
                kind: ModelKind::TorchScript,
                hash: ModelHash::of(&bytes),
                device,
                input: INPUT_SHAPE,
                spectrogram: None,
            };
            // Fail at load, not at the first window, when the module does not fit.
            let probe = vec![0f32; INPUT_SHAPE.iter().product::<i64>() as usize];
            model.logits(&probe, 1).map_err(|e| CnnError::Format {
                path: path.display().to_string(),
                reason: format!(
                    "TorchScript module does not map [1,3,33,153] to [1,2] logits: {e}"
                ),
            })?;
            return Ok(model);
        }
        let native = load_cnn(path, &bytes, device)?;
        let mut model = Self::from_native(&native.net, native.hash, device);
        model.spectrogram = native.input;
        Ok(model)
    }

    /// Wraps a just-trained network (already saved as the file `hash` names).
    pub fn from_native(net: &super::Cnn2d, hash: ModelHash, device: Device) -> Self {
        Self {
            backend: Backend::Native(FoldedCnn2d::new(net).to_device(device), Box::default()),
            kind: ModelKind::Native,
            hash,
            device,
            input: net.input,
            spectrogram: None,
        }
    }

    /// The class names, in logit order.
    pub fn classes(&self) -> Vec<String> {
        super::CLASSES.map(String::from).to_vec()
    }

    /// Refuses windows of another spectrogram input than the model was trained on.
    pub fn check_input(
        &self,
        windows: &quakelens_signal::spectrogram::SpectrogramInput,
    ) -> Result<(), CnnError> {
        match &self.spectrogram {
            Some(own) if own != windows => Err(CnnError::Input(format!(
                "the CNN {} was trained on {own} spectrograms, these windows are {windows}",
                self.hash
            ))),
            _ => Ok(()),
        }
    }

    pub fn input_shape(&self) -> [i64; 3] {
        self.input
    }

    fn input_len(&self) -> usize {
        self.input.iter().product::<i64>() as usize
    }

    /// `inputs` must hold `n` whole windows and, with `finite`, numbers only.
    fn check_batch(&self, inputs: &[f32], n: usize, finite: bool) -> Result<(), CnnError> {
        let len = self.input_len();
        if inputs.len() != n * len {
            return Err(CnnError::Input(format!(
                "{} values for {n} windows of {:?}",
                inputs.len(),
                self.input
            )));
        }
        if let Some(i) = inputs.iter().position(|v| finite && !v.is_finite()) {
            return Err(CnnError::Input(format!(
                "window {} holds a non-finite value at {}",
                i / len,
                i % len
            )));
        }
        Ok(())
    }

    /// Logits for `n` windows stored back to back in `inputs` (one forward pass, no grad).
    pub fn logits(&self, inputs: &[f32], n: usize) -> Result<Vec<[f32; 2]>, CnnError> {
        self.check_batch(inputs, n, true)?;
        let _guard = tch::no_grad_guard();
        let out = self.forward(&self.batch_tensor(inputs, n), n)?;
        let flat = read_f32(&out, "reading logits")?;
        Ok(flat.chunks_exact(2).map(|p| [p[0], p[1]]).collect())
    }

    /// The aftershock-minus-foreshock logit of `n` windows: the output the explainers explain
    /// by default.
    pub fn margins(&self, inputs: &[f32], n: usize) -> Result<Vec<f64>, CnnError> {
        self.outputs(inputs, n, &MARGIN)
    }

    /// `Σ c_k · logit_k` of `n` windows for output coefficients `c` (one per class).
    pub fn outputs(&self, inputs: &[f32], n: usize, c: &[f64]) -> Result<Vec<f64>, CnnError> {
        if c.len() != 2 {
            return Err(CnnError::Input(format!(
                "{} output coefficients for 2 classes",
                c.len()
            )));
        }
        Ok(self
            .logits(inputs, n)?
            .iter()
            .map(|l| c[0] * l[0] as f64 + c[1] * l[1] as f64)
            .collect())
    }

    /// `window` and `background` ready for coalitions of pixels evaluated cheaply
    /// ([`MaskedCnn`]); `None` for TorchScript models, whose layers are opaque.
    pub fn masked(
        &self,
        window: &[f32],
        background: &[f32],
        output: &[f64],
    ) -> Result<Option<super::MaskedCnn<'_>>, CnnError> {
        for (what, x) in [("window", window), ("background", background)] {
            self.check_batch(x, 1, true).map_err(|e| match e {
                CnnError::Input(why) => CnnError::Input(format!("{what}: {why}")),
                other => other,
            })?;
        }
        match &self.backend {
            Backend::Native(net, weights) => {
                let weights = match weights.get() {
                    Some(w) => w,
                    None => {
                        let _ = weights.set(StepWeights::new(net)?);
                        weights.get().expect("just set")
                    }
                };
                super::MaskedCnn::new(net, weights, self.device, window, background, output)
                    .map(Some)
            }
            Backend::TorchScript(_) => Ok(None),
        }
    }

    fn batch_tensor(&self, inputs: &[f32], n: usize) -> Tensor {
        let [c, h, w] = self.input;
        Tensor::from_slice(inputs)
            .view([n as i64, c, h, w])
            .to_device(self.device)
    }

    /// Logits `[n, 2]` of a batch already on the device.
    fn forward(&self, xs: &Tensor, n: usize) -> Result<Tensor, CnnError> {
        let out = match &self.backend {
            Backend::Native(net, _) => net.forward(xs),
            Backend::TorchScript(m) => m.forward_ts(&[xs]).map_err(|e| CnnError::Torch {
                context: "TorchScript forward".into(),
                error: e.to_string(),
            })?,
        };
        if out.size() != [n as i64, 2] {
            return Err(CnnError::Torch {
                context: "model output".into(),
                error: format!("shape {:?}, expected [{n}, 2]", out.size()),
            });
        }
        Ok(out)
    }

    /// The aftershock-minus-foreshock logit of `n` windows and its gradient with respect to
    /// every input value (back to back like `inputs`), for gradient-based explanations.
    pub fn margin_gradients(
        &self,
        inputs: &[f32],
        n: usize,
    ) -> Result<(Vec<f64>, Vec<f32>), CnnError> {
        self.check_batch(inputs, n, false)?;
        let xs = self.batch_tensor(inputs, n).set_requires_grad(true);
        let out = self.forward(&xs, n)?;
        let margin = out.select(1, 1) - out.select(1, 0);
        margin.sum(Kind::Float).backward();
        let grad = xs.grad();
        let margins = read_f32(&margin.detach(), "reading margins")?;
        let grads = read_f32(&grad, "reading gradients")?;
        Ok((margins.into_iter().map(f64::from).collect(), grads))
    }

    /// Scores windows in batches of `batch`.
    pub fn score(&self, windows: &[&[f32]], batch: usize) -> Result<Vec<CnnScore>, CnnError> {
        let mut out = Vec::with_capacity(windows.len());
        let mut buf = Vec::with_capacity(batch.max(1) * self.input_len());
        for chunk in windows.chunks(batch.max(1)) {
            buf.clear();
            for w in chunk {
                buf.extend_from_slice(w);
            }
            for logits in self.logits(&buf, chunk.len())? {
                out.push(CnnScore {
                    logits,
                    p_aftershock: softmax_second(logits),
                });
            }
        }
        Ok(out)
    }
}

/// P(class 1) from two logits, stable for large magnitudes.
fn softmax_second([a, b]: [f32; 2]) -> f32 {
    1.0 / (1.0 + (a - b).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_is_stable() {
        assert_eq!(softmax_second([0.0, 0.0]), 0.5);
        assert_eq!(softmax_second([1000.0, -1000.0]), 0.0);
        assert_eq!(softmax_second([-1000.0, 1000.0]), 1.0);
    }
}
