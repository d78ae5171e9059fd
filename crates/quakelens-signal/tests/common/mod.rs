//! Shared helpers of the signal integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use quakelens_signal::reference;

/// The real waveform kit copied from `../shared/data/real` (with ObsPy's manifest).
pub fn real_data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/real")
}

/// The reference Python, or `None` to skip (see `reference::python_for_tests`).
pub fn python() -> Option<PathBuf> {
    reference::python_for_tests()
}

/// Deterministic pseudo-random numbers (SplitMix64) for test inputs.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
}

/// The NaN-propagating comparisons every parity test shares.
#[allow(unused_imports)]
pub use quakelens_signal::reference::compare::{max_abs_diff, max_rel_err};
