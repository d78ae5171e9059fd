//! Pipeline stages and the embedded runner.
//!
//! Each stage is a plain function over in-memory batches, so the same code runs embedded in one
//! process (this crate's [`embedded`] runner) and, later, behind a transport in separate services:
//! [`ingest`] decodes miniSEED → [`windowing`] assembles stations and cuts windows →
//! [`transform`] computes spectrograms and features → [`labels`] attaches catalogue labels →
//! [`score`] runs the CNN and the forest → the lake sink writes Parquet.

pub mod config;
pub mod dset;
pub mod embedded;
pub mod failpoint;
pub mod ingest;
pub mod labels;
/// The services' messages, declared with their records in `quakelens-records`.
pub use quakelens_records::messages;
pub mod metrics;
mod run;
pub mod score;
pub mod stages;
pub mod transform;
pub mod waveform_shap;
pub mod windowing;

pub use config::PipelineConfig;
pub use embedded::{run, Input, RunReport};
