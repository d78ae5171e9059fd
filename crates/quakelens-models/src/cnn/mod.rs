//! The foreshock/aftershock CNN on LibTorch: architecture, training, the model file, and
//! batched scoring of native or TorchScript models.

mod arch;
mod file;
mod model;
mod train;

pub use arch::{feature_map, flat_dim, Cnn2d, FoldedCnn2d, CLASSES, INPUT_SHAPE};
pub use file::{load_cnn, save_cnn, NativeCnn, CNN_ARCH, CNN_FORMAT, CNN_FORMAT_VERSION};
pub use model::{CnnModel, CnnScore, ModelKind};
pub use train::{train_cnn, CnnTrainConfig, CnnTrainReport, EpochReport};

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

/// `cuda` when a GPU is usable, else `cpu`; `QUAKELENS_DEVICE=cpu|cuda|cuda:N` overrides.
pub fn default_device() -> tch::Device {
    match std::env::var("QUAKELENS_DEVICE").ok().as_deref() {
        Some("cpu") => tch::Device::Cpu,
        Some(d) if d.starts_with("cuda") => {
            let n = d
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            tch::Device::Cuda(n)
        }
        _ => tch::Device::cuda_if_available(),
    }
}
