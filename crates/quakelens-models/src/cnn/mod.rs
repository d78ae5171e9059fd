//! The foreshock/aftershock CNN on LibTorch: architecture, training, the model file, and
//! batched scoring of native or TorchScript models.

mod arch;
mod file;
mod masked;
mod model;
pub(crate) mod train;

pub use arch::{feature_map, flat_dim, Cnn2d, FoldedCnn2d, CLASSES, INPUT_SHAPE};
pub(crate) use file::{format_err, write_model_file};
pub use file::{load_cnn, save_cnn, NativeCnn, CNN_ARCH, CNN_FORMAT, CNN_FORMAT_VERSION};
pub use masked::{MaskedCnn, Step};
pub use model::{CnnModel, CnnScore, ModelKind, MARGIN};
pub use train::{train_cnn, train_cnn_on, CnnTrainConfig, CnnTrainReport, EpochReport};

#[derive(Debug, thiserror::Error)]
pub enum CnnError {
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{path}: {reason}")]
    Format { path: String, reason: String },
    #[error("{context}: {error}")]
    Torch { context: String, error: String },
    #[error("input: {0}")]
    Input(String),
}

/// A tensor's values as f32 on the CPU, flattened; `what` names the step in the error.
pub(crate) fn read_f32(t: &tch::Tensor, what: &str) -> Result<Vec<f32>, CnnError> {
    Vec::<f32>::try_from(
        t.to_device(tch::Device::Cpu)
            .to_kind(tch::Kind::Float)
            .contiguous()
            .flatten(0, -1),
    )
    .map_err(|e| CnnError::Torch {
        context: what.into(),
        error: e.to_string(),
    })
}

/// `cuda` when a GPU is usable, else `cpu`; `QUAKELENS_DEVICE=cpu|cuda|cuda:N` overrides, and
/// asking for a GPU that is not there is an error rather than a LibTorch abort later.
pub fn default_device() -> Result<tch::Device, CnnError> {
    let requested = std::env::var("QUAKELENS_DEVICE").ok();
    match requested.as_deref() {
        None | Some("") => Ok(tch::Device::cuda_if_available()),
        Some("cpu") => Ok(tch::Device::Cpu),
        Some(d) if d == "cuda" || d.starts_with("cuda:") => {
            let n: usize = match d.strip_prefix("cuda:") {
                Some(n) => n.parse().map_err(|_| bad_device(d))?,
                None => 0,
            };
            let available = if tch::Cuda::is_available() {
                tch::Cuda::device_count() as usize
            } else {
                0
            };
            if n >= available {
                return Err(CnnError::Input(format!(
                    "QUAKELENS_DEVICE={d}, but LibTorch sees {available} usable CUDA device(s)"
                )));
            }
            Ok(tch::Device::Cuda(n))
        }
        Some(d) => Err(bad_device(d)),
    }
}

fn bad_device(d: &str) -> CnnError {
    CnnError::Input(format!(
        "QUAKELENS_DEVICE={d:?}: expected cpu, cuda or cuda:N"
    ))
}
