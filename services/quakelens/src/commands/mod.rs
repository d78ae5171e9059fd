//! One module per subcommand: its arguments and what it does.

pub mod bench;
pub mod inspect;
pub mod run;
pub mod sql;
pub mod synth;

/// Default lake location, overridable with `--lake` or `QUAKELENS_LAKE`.
pub const DEFAULT_LAKE: &str = "quakelens-data/lake";

/// Synthetic-data options shared by `run` and `synth`.
#[derive(clap::Args, Clone, Debug)]
pub struct SynthOptions {
    /// Stations the events are spread over.
    #[arg(long, default_value_t = 4)]
    pub stations: usize,
    /// Random seed: the same seed gives the same data.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

impl SynthOptions {
    pub fn config(&self, events: usize) -> quakelens_synth::SynthConfig {
        quakelens_synth::SynthConfig {
            seed: self.seed,
            events,
            stations: self.stations,
            ..quakelens_synth::SynthConfig::default()
        }
    }
}
