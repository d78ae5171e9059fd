//! Batched inference of a waveform model: the paper's 1-D CNN from a quakelens file (batch norm
//! folded) or a user's TorchScript module.

use std::path::Path;

use tch::{CModule, Device, Tensor};

use super::arch::{unit_norm, FoldedConv1d, WAVEFORM_SHAPE};
use super::file::load_conv1d;
use crate::cnn::{format_err, read_f32, CnnError, ModelKind};
use crate::hash::ModelHash;
use crate::ttf::ClassCount;

enum Backend {
    Native(FoldedConv1d),
    /// Gets each window scaled to unit L2 norm per channel, as the paper's data loader fed its
    /// network, and returns `[N, classes]` logits.
    TorchScript(CModule),
}

/// A model that scores raw `(3, 2500)` windows into 2, 4 or 9 classes.
pub struct WaveformModel {
    backend: Backend,
    pub kind: ModelKind,
    pub hash: ModelHash,
    pub device: Device,
    /// Class names in logit order.
    pub classes: Vec<String>,
}

/// Values per window.
pub const WAVEFORM_LEN: usize = (WAVEFORM_SHAPE[0] * WAVEFORM_SHAPE[1]) as usize;

impl WaveformModel {
    /// Loads a quakelens CONV1D file or a TorchScript archive (recognised by its zip signature).
    pub fn load(path: &Path, device: Device) -> Result<Self, CnnError> {
        let bytes = std::fs::read(path).map_err(|error| CnnError::Io {
            path: path.display().to_string(),
            error,
        })?;
        let hash = ModelHash::of(&bytes);
        if bytes.starts_with(b"PK\x03\x04") {
            let fail = |reason: String| format_err(path, reason);
            let module = CModule::load_on_device(path, device)
                .map_err(|e| fail(format!("TorchScript: {e} (a PyTorch state_dict is imported with `quakelens import conv1d`)")))?;
            // The class count is what the module returns for one window.
            let probe = Tensor::zeros(
                [1, WAVEFORM_SHAPE[0], WAVEFORM_SHAPE[1]],
                (tch::Kind::Float, device),
            );
            let out = tch::no_grad(|| module.forward_ts(&[probe])).map_err(|e| {
                fail(format!(
                    "TorchScript module does not take [1,3,2500] waveforms: {e}"
                ))
            })?;
            let classes = match out.size().as_slice() {
                &[1, k] => ClassCount::from_count(k),
                _ => None,
            }
            .ok_or_else(|| {
                fail(format!(
                    "TorchScript module maps [1,3,2500] to {:?}; expected [1, 2|4|9] logits",
                    out.size()
                ))
            })?;
            return Ok(Self {
                backend: Backend::TorchScript(module),
                kind: ModelKind::TorchScript,
                hash,
                device,
                classes: classes.names(),
            });
        }
        let native = load_conv1d(path, &bytes, device)?;
        Ok(Self {
            backend: Backend::Native(FoldedConv1d::new(&native.net).to_device(device)),
            kind: ModelKind::NativeConv1d,
            hash,
            device,
            classes: native.classes,
        })
    }

    /// Wraps a just-trained network (already saved as the file `hash` names).
    pub fn from_native(
        net: &super::Conv1dNet,
        classes: Vec<String>,
        hash: ModelHash,
        device: Device,
    ) -> Self {
        Self {
            backend: Backend::Native(FoldedConv1d::new(net).to_device(device)),
            kind: ModelKind::NativeConv1d,
            hash,
            device,
            classes,
        }
    }

    /// `inputs` must hold `n` whole windows of finite values.
    fn check_batch(&self, inputs: &[f32], n: usize) -> Result<(), CnnError> {
        if inputs.len() != n * WAVEFORM_LEN {
            return Err(CnnError::Input(format!(
                "{} values for {n} waveform windows of {WAVEFORM_SHAPE:?}",
                inputs.len()
            )));
        }
        if let Some(i) = inputs.iter().position(|v| !v.is_finite()) {
            return Err(CnnError::Input(format!(
                "waveform window {} holds a non-finite value at channel {}, sample {}",
                i / WAVEFORM_LEN,
                i % WAVEFORM_LEN / WAVEFORM_SHAPE[1] as usize,
                i % WAVEFORM_SHAPE[1] as usize
            )));
        }
        Ok(())
    }

    /// Logits of `n` windows stored back to back in `inputs`, `classes.len()` per window.
    pub fn logits(&self, inputs: &[f32], n: usize) -> Result<Vec<f32>, CnnError> {
        self.check_batch(inputs, n)?;
        let _guard = tch::no_grad_guard();
        let xs = Tensor::from_slice(inputs)
            .view([n as i64, WAVEFORM_SHAPE[0], WAVEFORM_SHAPE[1]])
            .to_device(self.device);
        let out = match &self.backend {
            Backend::Native(net) => net.forward(&xs),
            Backend::TorchScript(m) => {
                m.forward_ts(&[unit_norm(&xs)])
                    .map_err(|e| CnnError::Torch {
                        context: "TorchScript forward".into(),
                        error: e.to_string(),
                    })?
            }
        };
        let k = self.classes.len() as i64;
        if out.size() != [n as i64, k] {
            return Err(CnnError::Torch {
                context: "model output".into(),
                error: format!("shape {:?}, expected [{n}, {k}]", out.size()),
            });
        }
        read_f32(&out, "reading logits")
    }

    /// Logits of every window (`[window][class]` flattened), `batch` windows a forward pass.
    pub fn batched_logits(&self, windows: &[&[f32]], batch: usize) -> Result<Vec<f32>, CnnError> {
        let mut out = Vec::with_capacity(windows.len() * self.classes.len());
        let mut buf = Vec::with_capacity(batch.max(1) * WAVEFORM_LEN);
        for chunk in windows.chunks(batch.max(1)) {
            buf.clear();
            chunk.iter().for_each(|w| buf.extend_from_slice(w));
            out.extend(self.logits(&buf, chunk.len())?);
        }
        Ok(out)
    }

    /// The most likely class of each window and the softmax probabilities, in batches.
    pub fn classify(
        &self,
        windows: &[&[f32]],
        batch: usize,
    ) -> Result<Vec<(usize, Vec<f32>)>, CnnError> {
        let logits = self.batched_logits(windows, batch)?;
        Ok(logits
            .chunks_exact(self.classes.len().max(1))
            // The largest logit, first on a tie: the rule every score follows.
            .map(|l| {
                (
                    quakelens_lake::predicted_index(l),
                    quakelens_lake::softmax(l),
                )
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_batches_and_non_finite_samples_are_refused_with_where() {
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let net = super::super::Conv1dNet::new(&vs.root(), 2);
        let names = vec!["foreshock".to_string(), "aftershock".to_string()];
        let model = WaveformModel::from_native(&net, names, ModelHash::of(b"test"), Device::Cpu);
        let mut x = vec![1.0f32; 2 * WAVEFORM_LEN];
        assert_eq!(model.logits(&x, 2).unwrap().len(), 4);
        let err = model
            .logits(&x[..WAVEFORM_LEN + 5], 2)
            .unwrap_err()
            .to_string();
        assert!(err.contains("for 2 waveform windows"), "{err}");
        x[WAVEFORM_LEN + 2500 + 7] = f32::NAN;
        let err = model.logits(&x, 2).unwrap_err().to_string();
        assert!(
            err.contains("window 1") && err.contains("channel 1, sample 7"),
            "{err}"
        );
    }
}
