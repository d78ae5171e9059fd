//! PNG figures of quakelens explanations, drawn without a plotting stack: a raster
//! [`Canvas`] with an 8×8 bitmap font, colour maps, axes with round ticks, and the four
//! figures a seismologist reads SHAP with ([`figures`]). Data in, image out: reading the lake
//! is the caller's job, so every figure is testable from plain vectors.

mod axes;
mod canvas;
pub mod color;
pub mod figures;

pub use axes::{nice_ticks, Axes, Range};
pub use canvas::{Canvas, Rgb};

/// Why a figure could not be drawn or written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("nothing to plot: {0}")]
    Empty(String),
    #[error("inconsistent input: {0}")]
    Input(String),
    #[error("encoding PNG: {0}")]
    Encode(#[from] png::EncodingError),
    #[error("writing {path}: {error}")]
    Io { path: String, error: std::io::Error },
}
