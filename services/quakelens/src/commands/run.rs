//! `quakelens run`: the embedded pipeline.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};

use quakelens_pipeline::{Input, PipelineConfig, RunReport};
use quakelens_signal::spectrogram::{ChannelStats, ImageScaling};
use quakelens_signal::stream::ChannelOrder;
use quakelens_signal::trigger::TriggerConfig;
use quakelens_signal::window::{GapPolicy, WindowMode};

use super::{set_threads, ModelOptions, SynthOptions, DEFAULT_LAKE};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Mode {
    /// One P-aligned window per STA/LTA trigger (5 s before to 20 s after the onset).
    Event,
    /// Fixed-length windows on a fixed time grid.
    Sliding,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// miniSEED files or directories (searched recursively). Without any, synthetic events are
    /// generated and processed.
    #[arg(long, num_args = 1..)]
    input: Vec<PathBuf>,
    /// A Laurenti D-set directory (<STA>_waveforms_pre/post.hdf5 + <STA>_attributes_pre/post.csv)
    /// instead of miniSEED: already-cut 25 s traces, labelled by pre/post.
    #[arg(long, conflicts_with_all = ["input", "synthetic"])]
    dset: Option<PathBuf>,
    /// Component order of the D-set datasets' three rows.
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
    /// Lake directory the tables are written to.
    #[arg(long, env = "QUAKELENS_LAKE", default_value = DEFAULT_LAKE)]
    lake: PathBuf,
    /// Catalogue CSV that labels windows (event_id,station,p_time,magnitude,class).
    #[arg(long)]
    catalog: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Mode::Event)]
    mode: Mode,
    /// Sliding mode: window length (s).
    #[arg(long, default_value_t = 25.0)]
    length: f64,
    /// Sliding mode: step between window starts (s).
    #[arg(long, default_value_t = 10.0)]
    step: f64,
    /// Event mode: STA length (s).
    #[arg(long, default_value_t = 0.5)]
    sta: f64,
    /// Event mode: LTA length (s).
    #[arg(long, default_value_t = 5.0)]
    lta: f64,
    /// Event mode: STA/LTA ratio that switches the trigger on.
    #[arg(long, default_value_t = 3.0)]
    trigger_on: f64,
    /// Event mode: ratio below which it switches off.
    #[arg(long, default_value_t = 1.0)]
    trigger_off: f64,
    /// Longest gap (samples at 100 Hz, per channel) that is interpolated; longer drops the window.
    #[arg(long, default_value_t = 50)]
    max_gap_fill: usize,
    /// Component order of windows, spectrograms and features.
    #[arg(long, default_value = "NEZ")]
    channel_order: String,
    /// Store the study's image pipeline (min–max, 8-bit, normalised) instead of log1p(PSD).
    #[arg(long)]
    image: bool,
    /// With --image: skip the 8-bit quantisation.
    #[arg(long)]
    no_quantize: bool,
    /// With --image: JSON file {"mean": [..3], "std": [..3]} replacing the study's statistics.
    #[arg(long)]
    stats: Option<PathBuf>,
    #[command(flatten)]
    models: ModelOptions,
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
        let mut cfg = PipelineConfig::new(self.lake.clone());
        cfg.mode = match self.mode {
            Mode::Event => WindowMode::Event {
                trigger: TriggerConfig {
                    sta_s: self.sta,
                    lta_s: self.lta,
                    thres_on: self.trigger_on,
                    thres_off: self.trigger_off,
                },
                pre_s: 5.0,
                post_s: 20.0,
            },
            Mode::Sliding => {
                if !(self.length > 0.0 && self.step > 0.0) {
                    bail!(
                        "--length and --step must be positive (got {} and {})",
                        self.length,
                        self.step
                    );
                }
                WindowMode::Sliding {
                    length_s: self.length,
                    step_s: self.step,
                }
            }
        };
        if !(self.sta > 0.0 && self.lta > self.sta) {
            bail!(
                "--lta ({}) must be longer than --sta ({}), both positive",
                self.lta,
                self.sta
            );
        }
        cfg.gaps = GapPolicy {
            max_fill_samples: self.max_gap_fill,
        };
        cfg.order = self
            .channel_order
            .parse::<ChannelOrder>()
            .map_err(anyhow::Error::msg)?;
        if self.image {
            let stats = match &self.stats {
                Some(path) => ChannelStats::from_json_file(path).map_err(anyhow::Error::msg)?,
                None => ChannelStats::default(),
            };
            cfg.scaling = ImageScaling::Image {
                quantize: !self.no_quantize,
                stats,
            };
        } else if self.stats.is_some() || self.no_quantize {
            bail!("--stats and --no-quantize only apply with --image");
        }
        cfg.catalog = self.catalog.clone();
        cfg.models = self.models.paths();
        cfg.score_batch = self.models.score_batch;
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
                    "seed-{}-events-{events}-stations-{}",
                    self.synth.seed, self.synth.stations
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
    let report = quakelens_pipeline::run(args.input()?, &cfg)?;
    print_report(&report);
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing report {}", path.display()))?;
    }
    Ok(())
}

fn print_report(r: &RunReport) {
    println!(
        "input      {} files, {} records, {} traces",
        r.files, r.records, r.traces
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
        "windows    {} cut ({} with filled gaps), {} dropped, {} re-triggers merged, {} labelled",
        r.windows,
        r.windows_with_filled_gaps,
        r.dropped_windows.len(),
        r.merged_onsets,
        r.labelled
    );
    if !r.skipped_traces.is_empty() {
        println!(
            "skipped    {} D-set traces (fewer than 3 rows, wrong length or NaN; details on stderr)",
            r.skipped_traces.len()
        );
    }
    if let Some(h) = &r.cnn_model {
        println!("cnn        {} windows scored ({h})", r.scored);
    }
    if let Some(h) = &r.forest_model {
        println!(
            "forest     {} magnitudes estimated, {} windows without all inputs ({h})",
            r.magnitudes,
            r.unscored.len()
        );
    }
    println!(
        "lake       {} rows in {} files under {}",
        r.rows_written,
        r.lake_files,
        r.lake.display()
    );
    println!("time       {:.2} s", r.seconds);
}
