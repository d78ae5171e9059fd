//! Bridge to the Python reference tools (numpy, scipy, ObsPy) for parity tests and benchmarks.
//!
//! The script ships inside the binary; arrays cross as raw little-endian f64 files.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The reference script (see `reference/reference.py`).
pub const SCRIPT: &str = include_str!("../reference/reference.py");

/// Locates a Python that has the reference packages: `$QUAKELENS_PYTHON`, else the project's
/// cached venv `.cache/pyref` (created by `.ci/setup-python`).
pub fn find_python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("QUAKELENS_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache/pyref/bin/python");
    root.exists().then_some(root)
}

/// The reference Python for a test, or `None` to skip it. With `QUAKELENS_REQUIRE_REFERENCE` set
/// (the README's test command sets it) a missing reference panics instead: parity tests must not
/// pass by skipping.
pub fn python_for_tests() -> Option<PathBuf> {
    match find_python() {
        Some(p) => Some(p),
        None if std::env::var_os("QUAKELENS_REQUIRE_REFERENCE").is_some() => {
            panic!("QUAKELENS_REQUIRE_REFERENCE is set but no reference Python was found")
        }
        None => {
            eprintln!(
                "skipped: no reference Python (set QUAKELENS_PYTHON or run .ci/setup-python)"
            );
            None
        }
    }
}

/// Runs `reference.py COMMAND ARGS…` in `work_dir` with `python`.
pub fn run(python: &Path, work_dir: &Path, command: &str, args: &[String]) -> Result<(), String> {
    run_script(
        python,
        work_dir,
        &[("quakelens_reference.py", SCRIPT)],
        command,
        args,
    )
    .map(|_| ())
}

/// Writes `files` (name, text) into `work_dir` and runs the first one with `COMMAND ARGS…`;
/// returns its stdout.
pub fn run_script(
    python: &Path,
    work_dir: &Path,
    files: &[(&str, &str)],
    command: &str,
    args: &[String],
) -> Result<String, String> {
    for (name, text) in files {
        let path = work_dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let script = work_dir.join(files.first().map(|f| f.0).unwrap_or_default());
    let output = Command::new(python)
        .arg(&script)
        .arg(command)
        .args(args)
        .output()
        .map_err(|e| format!("cannot start {}: {e}", python.display()))?;
    if !output.status.success() {
        return Err(format!(
            "reference `{command}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Writes values as raw little-endian f64.
pub fn write_f64(path: &Path, values: &[f64]) -> std::io::Result<()> {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes)
}

/// Reads raw little-endian f64.
pub fn read_f64(path: &Path) -> std::io::Result<Vec<f64>> {
    let bytes = std::fs::read(path)?;
    Ok(bytes
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .collect())
}
