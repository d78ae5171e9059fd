//! Bridge to the Python reference (PyTorch, scikit-learn, h5py) for parity tests and benchmarks;
//! the scripts ship inside the binary (see `python/`).

use std::path::Path;

pub const SCRIPT: &str = include_str!("../python/models_reference.py");
/// The user-facing scikit-learn exporter, also used by the reference script.
pub const EXPORTER: &str = include_str!("../python/export_sklearn_forest.py");

/// Runs `models_reference.py COMMAND ARGS…` in `work_dir`; returns its stdout.
pub fn run(
    python: &Path,
    work_dir: &Path,
    command: &str,
    args: &[String],
) -> Result<String, String> {
    quakelens_signal::reference::run_script(
        python,
        work_dir,
        &[
            ("models_reference.py", SCRIPT),
            ("export_sklearn_forest.py", EXPORTER),
        ],
        command,
        args,
    )
}
