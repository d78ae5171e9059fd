//! Deterministic synthetic 3-component earthquake recordings for tests and demos.
//!
//! Each event is a stochastic point source (Boore's method: windowed Gaussian noise shaped by a
//! Brune ω² spectrum), with P and S phases, an exponential coda and background noise. The two
//! classes differ the way the reference study found foreshocks and aftershocks to differ:
//! foreshocks radiate more high-frequency energy (higher stress drop → higher corner frequency,
//! and less near-site attenuation κ). The same seed always gives the same samples. Real data is
//! accepted everywhere these are.

mod catalog;
mod generator;
mod rng;
mod writer;

pub use catalog::{read_catalog, write_catalog, CatalogError, CatalogEvent, EventClass};
pub use generator::{generate, StationRecording, SynthConfig, Synthetic};
pub use rng::Rng;
pub use writer::{
    pack_channel, write_dataset, write_dataset_records, Encoding, WriteError, WrittenDataset,
};
