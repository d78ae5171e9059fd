//! `quakelens run`: the embedded pipeline.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;

use quakelens_pipeline::{Input, PipelineConfig, RunReport};
use quakelens_signal::stream::ChannelOrder;
use quakelens_signal::time::format_ns;

use quakelens_lake::LakeLocation;

use super::window_options::WindowOptions;
use super::{parse_lake, set_threads, ModelOptions, SynthOptions, DEFAULT_LAKE};

#[derive(Args, Debug)]
pub struct RunArgs {
    /// miniSEED files or directories (searched recursively). Without any, synthetic events are
    /// generated and processed.
    #[arg(long, num_args = 1..)]
    input: Vec<PathBuf>,
    /// The study's D-set directory instead of miniSEED: <STA>_waveforms_pre/post.hdf5 files
    /// (found anywhere below it, e.g. one folder per station) with the <STA>_attributes_pre/
    /// post.csv beside each: already-cut 25 s traces, labelled by pre/post.
    #[arg(long, conflicts_with_all = ["input", "synthetic"])]
    dset: Option<PathBuf>,
    /// The component of the D-set datasets' three rows, recorded as the windows' channel
    /// order; the rows are used as stored (row 0 is channel 0, as in the study).
    #[arg(long, default_value = "ENZ")]
    dset_rows: String,
    /// Number of synthetic events to generate (default 100 when no --input is given).
    #[arg(long)]
    synthetic: Option<usize>,
    #[command(flatten)]
    synth: SynthOptions,
    /// Where synthetic data is written.
    #[arg(long, default_value = "quakelens-data/synthetic")]
    synthetic_dir: PathBuf,
    /// Where the tables are written: a directory or s3://bucket/prefix.
    #[arg(long, env = "QUAKELENS_LAKE", default_value = DEFAULT_LAKE, value_parser = parse_lake)]
    lake: LakeLocation,
    #[command(flatten)]
    window: WindowOptions,
    #[command(flatten)]
    models: ModelOptions,
    /// Also explain every CNN score with image SHAP (partition explainer, this many model
    /// evaluations per window, e.g. 1000) into `cnn_shap`. Off by default: ~0.4 s per window.
    #[arg(long, value_name = "EVALS", default_value_t = 0)]
    explain_cnn: usize,
    /// Also write the run report as JSON here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
}

impl RunArgs {
    fn config(&self) -> anyhow::Result<PipelineConfig> {
        let mut cfg = self.window.config(Some(self.lake.clone()))?;
        cfg.models = self.models.paths();
        cfg.score_batch = self.models.score_batch;
        cfg.explain_evals = self.explain_cnn;
        cfg.progress = !self.quiet;
        Ok(cfg)
    }

    fn input(&self) -> anyhow::Result<Input> {
        if let Some(dir) = &self.dset {
            return Ok(Input::Dset {
                dir: dir.clone(),
                rows: self
                    .dset_rows
                    .parse::<ChannelOrder>()
                    .map_err(anyhow::Error::msg)?,
            });
        }
        Ok(match (self.input.is_empty(), self.synthetic) {
            (false, None) => Input::Paths(self.input.clone()),
            (_, events) => {
                let events = events.unwrap_or(100);
                let dir = self.synthetic_dir.join(format!(
                    "seed-{}-events-{events}-stations-{}{}",
                    self.synth.seed,
                    self.synth.stations,
                    if self.synth.sequence { "-sequence" } else { "" }
                ));
                Input::Synthetic {
                    config: self.synth.config(events),
                    dir,
                }
            }
        })
    }
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    set_threads(args.threads)?;
    if !args.input.is_empty() && args.synthetic.is_some() {
        bail!("give either --input or --synthetic, not both");
    }
    let cfg = args.config()?;
    let input = args.input()?;
    let (mainshock, middle) = match &input {
        Input::Synthetic { config, .. } => (config.mainshock_ns(), config.middle_span_ns()),
        _ => (None, None),
    };
    let report = quakelens_pipeline::run(input, &cfg)?;
    print_report(&report);
    if let Some(t) = mainshock {
        println!(
            "sequence   mainshock {} (train conv1d --mainshock it)",
            format_ns(t)
        );
    }
    if let Some((start, end)) = middle {
        println!(
            "sequence   middle {}..{} (train conv1d --classes 9 --middle it)",
            format_ns(start),
            format_ns(end)
        );
    }
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing report {}", path.display()))?;
    }
    Ok(())
}

fn print_report(r: &RunReport) {
    println!(
        "input      {} files, {} records (at most {} files and {} records read ahead)",
        r.files, r.records, r.read_ahead_files, r.read_ahead_records
    );
    if !r.failed_files.is_empty() || !r.decode_warnings.is_empty() {
        println!(
            "problems   {} unreadable files, {} decode warnings (details on stderr)",
            r.failed_files.len(),
            r.decode_warnings.len()
        );
    }
    println!(
        "stations   {} 3-component streams ({} resampled segments, {} snapped, {} overlapping samples dropped)",
        r.streams, r.resampled_segments, r.snapped_segments, r.overlap_samples
    );
    if !r.unassembled.is_empty() {
        println!(
            "not used   {} channels/streams (details on stderr)",
            r.unassembled.len()
        );
    }
    println!(
        "windows    {} cut ({} with filled gaps, {} with a constant channel), {} dropped, {} re-triggers merged, {} labelled",
        r.windows,
        r.windows_with_filled_gaps,
        r.windows_with_flat_channels,
        r.dropped_windows.len(),
        r.merged_onsets,
        r.labelled
    );
    if r.already_in_lake > 0 {
        println!(
            "rerun      {} rows of this input were in the lake already (nothing written twice)",
            r.already_in_lake
        );
    }
    if !r.rejected.is_empty() {
        println!(
            "rejected   {} messages a stage could not use (details on stderr)",
            r.rejected.len()
        );
    }
    if !r.skipped_traces.is_empty() {
        println!(
            "skipped    {} D-set traces (not (3, 2500), unreadable or NaN; details on stderr)",
            r.skipped_traces.len()
        );
    }
    if let Some(h) = &r.cnn_model {
        println!("cnn        {} windows scored ({h})", r.scored);
        if r.cnn_explained > 0 {
            println!(
                "shap       {} CNN scores explained (partition explainer, table cnn_shap)",
                r.cnn_explained
            );
        }
    }
    if let Some(h) = &r.forest_model {
        println!(
            "forest     {} magnitudes estimated, {} windows without all inputs ({h})",
            r.magnitudes,
            r.unscored.len()
        );
        println!(
            "shap       {} magnitudes explained (exact TreeSHAP, table forest_shap)",
            r.explained
        );
    }
    println!(
        "lake       {} windows written, {} files added, Delta tables under {}",
        r.rows_written, r.lake_files, r.lake
    );
    println!("time       {:.2} s", r.seconds);
}
