//! quakelens models: the study's spectrogram CNN and the paper's waveform CNN (LibTorch through tch) and the random-forest
//! magnitude regressor, each with training, a documented file format carrying a content hash,
//! imports from PyTorch/scikit-learn, and batched scoring.

pub mod cnn;
pub mod conv1d;
pub mod dataset;
pub mod forest;
pub mod hash;
pub mod metrics;
pub mod reference;
pub mod torch_save;
pub mod ttf;

pub use hash::ModelHash;
