//! `quakelens synth`: write a labelled synthetic dataset.

use std::path::PathBuf;

use clap::Args;

use super::SynthOptions;

#[derive(Args, Debug)]
pub struct SynthArgs {
    /// Output directory (miniSEED per channel plus catalog.csv).
    #[arg(long)]
    out: PathBuf,
    /// Number of events.
    #[arg(long, default_value_t = 100)]
    events: usize,
    #[command(flatten)]
    synth: SynthOptions,
}

pub fn run(args: SynthArgs) -> anyhow::Result<()> {
    let config = args.synth.config(args.events);
    let data = quakelens_synth::generate(&config);
    let written = quakelens_synth::write_dataset(&args.out, &data)?;
    println!(
        "wrote {} events on {} stations: {} miniSEED files and {}",
        data.catalog.len(),
        data.stations.len(),
        written.files.len(),
        written.catalog.display()
    );
    if let Some(t) = config.mainshock_ns() {
        println!(
            "sequence mainshock {}",
            quakelens_signal::time::format_ns(t)
        );
    }
    if let Some((start, end)) = config.middle_span_ns() {
        let at = quakelens_signal::time::format_ns;
        println!("sequence middle {}..{}", at(start), at(end));
    }
    Ok(())
}
