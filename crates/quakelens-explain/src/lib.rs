//! SHAP explanations for the project's models. [`tree`]: exact path-dependent TreeSHAP for the
//! magnitude forest, with shap's `TreeExplainer` conventions. [`image`]: model-agnostic image
//! SHAP (partition/Owen values under a budget, exact Shapley values of small games).
//! [`inpaint`]: OpenCV's Telea inpainting, the masker the study explained its CNNs with.

pub mod image;
pub mod inpaint;
pub mod tree;
pub mod waveform;

pub use tree::{ForestShap, Method, TreeShapError};

/// The shap reference script for parity tests and benchmarks (ships inside the binary).
pub mod reference {
    use std::path::Path;

    pub const SCRIPT: &str = include_str!("../python/shap_reference.py");

    /// Runs `shap_reference.py COMMAND ARGS…` in `work_dir`; returns its stdout.
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
                ("shap_reference.py", SCRIPT),
                (
                    "export_sklearn_forest.py",
                    quakelens_models::reference::EXPORTER,
                ),
                ("models_reference.py", quakelens_models::reference::SCRIPT),
            ],
            command,
            args,
        )
    }
}
