//! One module per subcommand: its arguments and what it does.

pub mod bench;
pub mod bench_explain;
pub mod bench_explainers;
pub mod bench_lake;
pub mod bench_models;
pub mod bench_services;
pub mod bench_soak;
pub mod bench_windower;
pub mod experiment;
pub mod explain;
pub mod import;
pub mod inspect;
pub mod interactions;
pub mod lake;
pub mod plot;
pub mod query;
pub mod run;
pub mod score;
pub mod serve;
pub mod sql;
pub mod synth;
pub mod train;
pub mod train_conv1d;
pub mod window_options;

/// Default lake location, overridable with `--lake` or `QUAKELENS_LAKE`.
pub const DEFAULT_LAKE: &str = "quakelens-data/lake";

/// `--lake`: a directory or `s3://bucket/prefix`.
pub fn parse_lake(s: &str) -> Result<quakelens_lake::LakeLocation, String> {
    quakelens_lake::LakeLocation::parse(s).map_err(|e| e.to_string())
}
/// Where `train` writes models and `run`/`score` look for them.
pub const DEFAULT_MODELS: &str = "quakelens-data/models";

/// `s` as an SQL string literal.
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A tokio runtime for the async lake API.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// The reference Python a benchmark compares against: `--python`, else `$QUAKELENS_PYTHON` or
/// `.cache/pyref`.
pub fn reference_python(given: &Option<std::path::PathBuf>) -> anyhow::Result<std::path::PathBuf> {
    given
        .clone()
        .or_else(quakelens_signal::reference::find_python)
        .ok_or_else(|| {
            anyhow::anyhow!("no reference Python: pass --python or run `bash .ci/setup-python`")
        })
}

/// The CNN a benchmark times: `given`, or a randomly initialised CNN2D (seed 1) saved in `dir`.
pub fn bench_cnn(
    given: &Option<std::path::PathBuf>,
    dir: &std::path::Path,
) -> anyhow::Result<std::path::PathBuf> {
    use quakelens_models::cnn::{save_cnn, Cnn2d, INPUT_SHAPE};
    if let Some(p) = given {
        return Ok(p.clone());
    }
    tch::manual_seed(1);
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _net = Cnn2d::new(&vs.root(), INPUT_SHAPE);
    let path = dir.join("cnn.safetensors");
    save_cnn(&vs, INPUT_SHAPE, &Default::default(), None, &path)?;
    Ok(path)
}

/// Sizes rayon's pool and LibTorch's intra-op pool alike, so they do not oversubscribe cores.
pub fn set_threads(threads: Option<usize>) -> anyhow::Result<()> {
    let n = threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .map_err(|e| anyhow::anyhow!("setting up {n} worker threads: {e}"))?;
    tch::set_num_threads(n as i32);
    Ok(())
}

/// `--cnn`/`--forest`, defaulting to the files `train` writes when they exist.
#[derive(clap::Args, Clone, Debug)]
pub struct ModelOptions {
    /// Classifier to score with: a quakelens CNN2D or CONV1D .safetensors file (the paper's
    /// 1-D CNN, which reads the windows' waveforms: a lake made with --waveforms) or a
    /// TorchScript spectrogram CNN .pt (default: quakelens-data/models/cnn.safetensors when
    /// present).
    #[arg(long)]
    pub cnn: Option<std::path::PathBuf>,
    /// Forest to estimate magnitudes with (default: quakelens-data/models/forest.arrow when present).
    #[arg(long)]
    pub forest: Option<std::path::PathBuf>,
    /// Do not score, even when default models exist.
    #[arg(long, conflicts_with_all = ["cnn", "forest"])]
    pub no_models: bool,
    /// Windows per CNN forward pass.
    #[arg(long, default_value_t = 64)]
    pub score_batch: usize,
}

impl ModelOptions {
    pub fn paths(&self) -> quakelens_pipeline::score::ModelPaths {
        let default = |name: &str| {
            let p = std::path::Path::new(DEFAULT_MODELS).join(name);
            (!self.no_models && p.is_file()).then_some(p)
        };
        let explicit = self.cnn.is_some() || self.forest.is_some();
        quakelens_pipeline::score::ModelPaths {
            cnn: self.cnn.clone().or_else(|| {
                if explicit {
                    None
                } else {
                    default("cnn.safetensors")
                }
            }),
            forest: self.forest.clone().or_else(|| {
                if explicit {
                    None
                } else {
                    default("forest.arrow")
                }
            }),
        }
    }
}

/// Synthetic-data options shared by `run` and `synth`.
#[derive(clap::Args, Clone, Debug)]
pub struct SynthOptions {
    /// Stations the events are spread over.
    #[arg(long, default_value_t = 4)]
    pub stations: usize,
    /// Random seed: the same seed gives the same data.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// A foreshock–mainshock–aftershock sequence whose source drifts with time to failure
    /// (stress drop falling and κ rising toward the mainshock, recovering after it), for the
    /// paper's 4 and 9 time-to-failure classes; the mainshock time is printed.
    #[arg(long)]
    pub sequence: bool,
    /// With --sequence: an intermediate sequence in the foreshock side (0.55–0.75 of its
    /// time), with a source of its own, for the 9 classes' middle class; its span is printed.
    #[arg(long, requires = "sequence")]
    pub middle: bool,
}

impl SynthOptions {
    pub fn config(&self, events: usize) -> quakelens_synth::SynthConfig {
        quakelens_synth::SynthConfig {
            seed: self.seed,
            events,
            stations: self.stations,
            sequence: self.sequence,
            middle: self.middle,
            ..quakelens_synth::SynthConfig::default()
        }
    }
}
