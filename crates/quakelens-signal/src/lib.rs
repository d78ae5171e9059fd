//! The seismic signal core of quakelens.
//!
//! Everything here is pure computation over samples: no broker, no files beyond miniSEED decoding.
//! The pipeline order is the module order:
//! [`miniseed`] decodes records → [`assembly`] builds 3-component station streams on a 100 Hz grid
//! (resampling with [`resample`]) → [`window`] cuts P-aligned or sliding windows (onsets from
//! the streaming [`picker`]: [`trigger`]'s STA/LTA, bandpassed by [`filter`]) → [`spectrogram`]
//! and [`features`] turn each window into model inputs.
//!
//! Numerics follow the reference tools exactly where they are math: `scipy.signal.spectrogram`,
//! `scipy.signal.welch`, `scipy.signal.resample_poly`, ObsPy's `recursive_sta_lta` and
//! `trigger_onset`. The `reference` module carries the Python scripts the parity tests and the
//! benchmark run against those tools.

pub mod assembly;
pub mod bands;
pub mod features;
pub mod filter;
pub mod lowpass;
pub mod miniseed;
pub mod pairwise;
pub mod picker;
pub mod reference;
pub mod resample;
pub mod spectrogram;
pub mod stream;
pub mod time;
pub mod trigger;
pub mod window;
mod windows_fn;

/// The sampling rate every station stream is brought to before windowing (Hz).
pub const TARGET_RATE_HZ: f64 = 100.0;
/// Nanoseconds between two samples at [`TARGET_RATE_HZ`].
pub const TARGET_PERIOD_NS: i64 = 10_000_000;
