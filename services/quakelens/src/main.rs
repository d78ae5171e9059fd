//! `quakelens`: the embedded pipeline, each Kafka service, SQL over the lake, synthetic data,
//! file inspection and benchmarks.

mod commands;
mod http;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "quakelens",
    version,
    about = "Explained predictions from raw seismic network feeds"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole pipeline in this process: miniSEED (or synthetic events) → lake.
    Run(Box<commands::run::RunArgs>),
    /// Train the CNN or the magnitude forest on the lake's labelled windows.
    #[command(subcommand)]
    Train(commands::train::TrainCommand),
    /// Score the lake's windows with the CNN and/or the forest.
    Score(commands::score::ScoreArgs),
    /// Explain the CNN's predictions for windows in the lake (image SHAP → cnn_shap).
    Explain(commands::explain::ExplainArgs),
    /// Exact TreeSHAP interaction values of the magnitude forest for one window.
    Interactions(commands::interactions::InteractionsArgs),
    /// Answer SQL over the lake (tables: windows, features, scores, magnitudes, forest_shap, cnn_shap).
    Sql(commands::sql::SqlArgs),
    /// PNG figures of the explanations: window overlay, class means, beeswarm, waterfall.
    #[command(subcommand)]
    Plot(commands::plot::PlotCommand),
    /// Write a labelled synthetic dataset as miniSEED plus catalog.csv.
    Synth(commands::synth::SynthArgs),
    /// Convert a model trained elsewhere (the paper's PyTorch 1-D CNN) into a model file.
    #[command(subcommand)]
    Import(commands::import::ImportCommand),
    /// The paper's experiments on a waveform lake (`experiment lowpass`).
    #[command(subcommand)]
    Experiment(commands::experiment::ExperimentCommand),
    /// Decode miniSEED files and list their traces and problems.
    Inspect(commands::inspect::InspectArgs),
    /// Create the Kafka topics the services use (existing ones are left alone).
    #[command(subcommand)]
    Topics(commands::serve::TopicsCommand),
    /// Service: replay miniSEED files into waveforms.raw.
    Ingest(commands::serve::IngestArgs),
    /// Service: waveforms.raw → windows (assembly, trigger, spectrograms, features).
    Windower(Box<commands::serve::WindowerArgs>),
    /// Service: windows → scores with the CNN.
    Scorer(commands::serve::ModelServiceArgs),
    /// Service: windows → magnitudes with the random forest (+ shap.tasks with --explain).
    Forest(commands::serve::ModelServiceArgs),
    /// Service: shap.tasks → shap.results (exact TreeSHAP); run several to share the work.
    Explainer(commands::serve::ExplainerArgs),
    /// Service: windows, scores, magnitudes and explanations → the lake's Delta tables (each row
    /// once); with a subcommand, lake maintenance (optimize, vacuum, convert, files).
    Lake(Box<commands::serve::LakeArgs>),
    /// Service: SQL over the lake on HTTP.
    Query(commands::query::QueryArgs),
    /// Benchmarks against the reference tools, printed as tables.
    #[command(subcommand)]
    Bench(commands::bench::BenchCommand),
}

/// LibTorch allocates every activation afresh and frees it after the next layer. glibc serves
/// blocks above its mmap threshold (at most 32 MiB, adjusted as it goes) with fresh mappings
/// and unmaps them on free, so each batch of the 1-D CNN (activations of ~40 MiB a layer)
/// page-faults and zeroes its memory again: about a third of PyTorch eager's time in `bench
/// models`. Freed blocks up to [`KEEP`] are kept for reuse instead, in the commands that run
/// the CNNs: their heap then stays near its peak (the largest batch), not at its current use.
/// The services that run no network (windower, forest, lake, …) return freed memory as before.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) const KEEP: libc::c_int = 512 << 20;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_blocks() {
    // SAFETY: mallopt only changes the allocator's thresholds; called before any thread
    // (runtime, LibTorch, rayon) starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, KEEP);
        libc::mallopt(libc::M_TRIM_THRESHOLD, KEEP);
    }
}

impl Command {
    /// Whether the command runs a CNN (training, inference or image SHAP).
    fn runs_networks(&self) -> bool {
        matches!(
            self,
            Command::Run(_)
                | Command::Train(_)
                | Command::Score(_)
                | Command::Explain(_)
                | Command::Experiment(_)
                | Command::Bench(_)
                | Command::Scorer(_)
                | Command::Explainer(_)
        )
    }
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("QUAKELENS_LOG").unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if cli.command.runs_networks() {
        keep_freed_blocks();
    }
    let result = match cli.command {
        Command::Run(args) => commands::run::run(*args),
        Command::Train(cmd) => commands::train::run(cmd),
        Command::Score(args) => commands::score::run(args),
        Command::Explain(args) => commands::explain::run(args),
        Command::Sql(args) => commands::sql::run(args),
        Command::Plot(command) => commands::plot::run(command),
        Command::Interactions(args) => commands::interactions::run(args),
        Command::Synth(args) => commands::synth::run(args),
        Command::Inspect(args) => commands::inspect::run(args),
        Command::Import(cmd) => commands::import::run(cmd),
        Command::Experiment(cmd) => commands::experiment::run(cmd),
        Command::Bench(cmd) => commands::bench::run(cmd),
        Command::Topics(cmd) => commands::serve::topics(cmd),
        Command::Ingest(args) => commands::serve::ingest(args),
        Command::Windower(args) => commands::serve::windower(*args),
        Command::Scorer(args) => commands::serve::model_service(args, false),
        Command::Forest(args) => commands::serve::model_service(args, true),
        Command::Explainer(args) => commands::serve::explainer(args),
        Command::Lake(args) => commands::serve::lake(*args),
        Command::Query(args) => commands::query::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
