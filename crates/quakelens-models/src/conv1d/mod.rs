//! The paper's own model (Laurenti et al., Nat. Commun. 2024): a 1-D CNN on the raw `(3, 2500)`
//! waveforms that separates 2, 4 or 9 time-to-failure classes. Architecture, model file and
//! state_dict import, training, and batched scoring; errors are the CNN's ([`CnnError`]).

mod arch;
mod file;
mod model;
mod train;

pub use arch::{
    avg_pool_kernel, steps_after_blocks, unit_norm, Conv1dNet, FoldedConv1d, BLOCKS, WAVEFORM_SHAPE,
};
pub use file::{
    import_state_dict, is_conv1d_file, load_conv1d, save_conv1d, NativeConv1d, CONV1D_ARCH,
    WAVEFORM_INPUT,
};
pub use model::{WaveformModel, WAVEFORM_LEN};
pub use train::{train_conv1d, ClassedWindow, Conv1dEpoch, Conv1dTrainConfig, Conv1dTrainReport};

pub use crate::cnn::CnnError;
