//! `quakelens inspect`: what a miniSEED file holds, like ObsPy's `print(read(f))`.

use std::path::PathBuf;

use clap::Args;

use quakelens_signal::miniseed::read_file;
use quakelens_signal::time::format_ns;

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// miniSEED files.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

pub fn run(args: InspectArgs) -> anyhow::Result<()> {
    let mut failed = 0;
    for file in &args.files {
        match read_file(file) {
            Ok(decoded) => {
                println!(
                    "{}: {} records, {} traces",
                    file.display(),
                    decoded.records,
                    decoded.traces.len()
                );
                for t in &decoded.traces {
                    let end = t.start_ns
                        + ((t.samples.len().saturating_sub(1)) as f64 * t.period_ns()).round()
                            as i64;
                    println!(
                        "  {} | {} - {} | {} Hz, {} samples",
                        t.id,
                        format_ns(t.start_ns),
                        format_ns(end),
                        t.sample_rate,
                        t.samples.len()
                    );
                }
                for w in &decoded.warnings {
                    println!("  warning: {w}");
                }
            }
            Err(e) => {
                failed += 1;
                println!("error: {e}");
            }
        }
    }
    if failed > 0 {
        anyhow::bail!(
            "{failed} of {} files could not be decoded",
            args.files.len()
        );
    }
    Ok(())
}
