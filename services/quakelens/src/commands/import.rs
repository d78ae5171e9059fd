//! `quakelens import`: a model trained elsewhere, as a quakelens model file with its hash.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use quakelens_models::conv1d::{import_state_dict, save_conv1d, WaveformModel};

#[derive(Subcommand, Debug)]
pub enum ImportCommand {
    /// The paper's 1-D CNN from a PyTorch state_dict (`torch.save(net.state_dict(), f)` or
    /// safetensors) with its names conv1…conv7, BatchNorm1…BatchNorm7, layer_out.
    Conv1d(ImportConv1dArgs),
}

#[derive(Args, Debug)]
pub struct ImportConv1dArgs {
    /// The state_dict file.
    state_dict: PathBuf,
    /// Where to write the model.
    #[arg(long, default_value = "quakelens-data/models/conv1d.safetensors")]
    out: PathBuf,
}

pub fn run(cmd: ImportCommand) -> anyhow::Result<()> {
    match cmd {
        ImportCommand::Conv1d(args) => conv1d(args),
    }
}

fn conv1d(args: ImportConv1dArgs) -> anyhow::Result<()> {
    let (vs, _net, classes) = import_state_dict(&args.state_dict, tch::Device::Cpu)?;
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let source = serde_json::json!({ "imported_from": args.state_dict.display().to_string() });
    let hash = save_conv1d(&vs, &classes, Some(&source), &args.out)?;
    // Read back as any scorer would, so a file that does not load is never left claiming success.
    WaveformModel::load(&args.out, tch::Device::Cpu)
        .with_context(|| format!("reading back {}", args.out.display()))?;
    println!(
        "{} → {}: conv1d, {} classes ({}), hash {hash}",
        args.state_dict.display(),
        args.out.display(),
        classes.len(),
        classes.join(", ")
    );
    Ok(())
}
