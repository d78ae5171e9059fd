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

/// Whether the tests must have `what` (`QUAKELENS_REQUIRE_<WHAT>` set to anything but "", "0"
/// or "false"; the README's test command sets REFERENCE, BROKER, S3 and OPS_TOOLS to 1). The one
/// reading of every such switch.
pub fn required(what: &str) -> bool {
    std::env::var(format!("QUAKELENS_REQUIRE_{what}"))
        .is_ok_and(|v| !matches!(v.trim().to_ascii_lowercase().as_str(), "" | "0" | "false"))
}

/// A test's missing tool: a panic when [`required`] (a test must not pass by skipping), else a
/// note that the test is skipped.
pub fn missing(what: &str, why: &str) {
    if required(what) {
        panic!("QUAKELENS_REQUIRE_{what} is set: {why}");
    }
    eprintln!("SKIPPED: {why}");
}

/// The reference Python for a test, or `None` to skip it (see [`missing`]).
pub fn python_for_tests() -> Option<PathBuf> {
    let found = find_python();
    if found.is_none() {
        missing(
            "REFERENCE",
            "no reference Python (set QUAKELENS_PYTHON or run .ci/setup-python)",
        );
    }
    found
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

/// The comparisons every parity test uses, so a NaN can never pass one: a NaN on one side where
/// the other is a number is an infinite error (a NaN on both sides is equal), and results of
/// different lengths are refused before anything is compared.
pub mod compare {
    fn check_lengths(ours: &[f64], reference: &[f64]) {
        assert_eq!(
            ours.len(),
            reference.len(),
            "length mismatch: {} values against the reference's {}",
            ours.len(),
            reference.len()
        );
    }

    fn difference(a: f64, b: f64) -> Option<f64> {
        match (a.is_nan(), b.is_nan()) {
            (true, true) => None,
            (false, false) if a == b => Some(0.0),
            (false, false) => Some((a - b).abs()),
            _ => Some(f64::INFINITY),
        }
    }

    /// Largest |ours − reference|.
    pub fn max_abs_diff(ours: &[f64], reference: &[f64]) -> f64 {
        check_lengths(ours, reference);
        ours.iter()
            .zip(reference)
            .filter_map(|(&a, &b)| difference(a, b))
            .fold(0.0, |m: f64, d| if d > m || d.is_nan() { d } else { m })
    }

    /// Largest relative error, each denominator floored at `floor · max|reference|`.
    pub fn max_rel_err(ours: &[f64], reference: &[f64], floor: f64) -> f64 {
        check_lengths(ours, reference);
        let scale = reference
            .iter()
            .filter(|v| v.is_finite())
            .fold(0.0f64, |m, v| m.max(v.abs()))
            * floor;
        ours.iter()
            .zip(reference)
            .filter_map(|(&a, &b)| {
                difference(a, b).map(|d| d / b.abs().max(scale).max(f64::MIN_POSITIVE))
            })
            .fold(0.0, |m: f64, d| if d > m || d.is_nan() { d } else { m })
    }

    /// The same for f32 results (widened).
    pub fn max_abs_diff_f32(ours: &[f32], reference: &[f32]) -> f64 {
        let a: Vec<f64> = ours.iter().map(|&v| v as f64).collect();
        let b: Vec<f64> = reference.iter().map(|&v| v as f64).collect();
        max_abs_diff(&a, &b)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn nan_and_length_never_pass() {
            assert_eq!(max_abs_diff(&[1.0, 2.0], &[1.0, 2.5]), 0.5);
            assert_eq!(max_abs_diff(&[f64::NAN], &[f64::NAN]), 0.0);
            assert_eq!(max_abs_diff(&[f64::NAN, 1.0], &[0.0, 1.0]), f64::INFINITY);
            assert_eq!(max_abs_diff(&[0.0], &[f64::NAN]), f64::INFINITY);
            assert_eq!(max_rel_err(&[f64::NAN; 4], &[1.0; 4], 0.0), f64::INFINITY);
            assert!(max_rel_err(&[2.0], &[1.0], 0.0) == 1.0);
            assert_eq!(max_abs_diff(&[f64::INFINITY], &[f64::INFINITY]), 0.0);
            let short = std::panic::catch_unwind(|| max_abs_diff(&[1.0], &[1.0, 2.0]));
            assert!(short.is_err());
        }
    }
}
