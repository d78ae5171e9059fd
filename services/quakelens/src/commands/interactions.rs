//! `quakelens interactions`: exact TreeSHAP interaction values of the magnitude forest for one
//! window of the lake: which inputs act on the estimate alone (the diagonal) and which pairs act
//! together, optionally the whole matrix as CSV.

use std::io::Write;
use std::path::{Path, PathBuf};

use quakelens_lake::LakeLocation;

use anyhow::Context;
use clap::Args;

use quakelens_explain::ForestShap;
use quakelens_lake::Lake;
use quakelens_models::dataset::{load_examples, Selection};
use quakelens_models::forest::Forest;

use super::{literal, parse_lake, runtime, set_threads, DEFAULT_LAKE, DEFAULT_MODELS};

#[derive(Args, Debug)]
pub struct InteractionsArgs {
    #[arg(long, env = "QUAKELENS_LAKE", default_value = DEFAULT_LAKE, value_parser = parse_lake)]
    lake: LakeLocation,
    /// The forest to explain (`quakelens train forest` writes the default).
    #[arg(long, default_value_os_t = Path::new(DEFAULT_MODELS).join("forest.arrow"))]
    forest: PathBuf,
    /// The window to explain.
    #[arg(long)]
    window_id: String,
    /// Main effects and pairs to list.
    #[arg(long, default_value_t = 10)]
    top: usize,
    /// Write every entry (feature_a, feature_b, value) here as CSV.
    #[arg(long)]
    csv: Option<PathBuf>,
    #[arg(long)]
    threads: Option<usize>,
}

pub fn run(args: InteractionsArgs) -> anyhow::Result<()> {
    set_threads(args.threads)?;
    let forest =
        Forest::load(&args.forest).with_context(|| format!("loading {}", args.forest.display()))?;
    let sel = Selection {
        inputs: forest.spec.features.clone(),
        filter: Some(format!("w.window_id = {}", literal(&args.window_id))),
        ..Selection::default()
    };
    let examples = runtime()?.block_on(async {
        let lake = Lake::open(&args.lake).await?;
        if let (Some(set), Some(f)) = (forest.spec.waveform_set(), lake.format()) {
            anyhow::ensure!(
                set == f.features,
                "the forest was grown on the {set} feature set, the lake holds {} features",
                f.features
            );
        }
        anyhow::Ok(load_examples(&lake, &sel).await?)
    })?;
    let window = examples
        .first()
        .with_context(|| format!("no window {} in {}", args.window_id, args.lake))?;
    let x = forest
        .complete_inputs(&window.inputs)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("window {}", args.window_id))?;
    let shap = ForestShap::new(&forest)?;
    let started = std::time::Instant::now();
    let matrix = shap
        .interactions_row(&x)
        .with_context(|| format!("window {}", args.window_id))?;
    let secs = started.elapsed().as_secs_f64();
    let names = &forest.spec.features;
    let m = names.len();
    let prediction = forest.predict_row(&x);
    println!(
        "window {} ({}): magnitude {prediction:.4} = base {:.4} + Σ of {m}×{m} interaction values {:.4} ({secs:.2} s)",
        window.window_id,
        window.station,
        shap.base_value(),
        matrix.iter().sum::<f64>()
    );
    let mut main: Vec<(usize, f64)> = (0..m).map(|i| (i, matrix[i * m + i])).collect();
    main.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
    println!("\nmain effects (Φ_ii)");
    for (i, v) in main.iter().take(args.top) {
        println!("  {:<32} {v:+.5}", names[*i]);
    }
    // A pair's whole interaction is split evenly between Φ_ij and Φ_ji.
    let mut pairs: Vec<(usize, usize, f64)> = (0..m)
        .flat_map(|i| (i + 1..m).map(move |j| (i, j)))
        .map(|(i, j)| (i, j, matrix[i * m + j] + matrix[j * m + i]))
        .collect();
    pairs.sort_by(|a, b| b.2.abs().total_cmp(&a.2.abs()));
    println!("\npairs (Φ_ij + Φ_ji)");
    for (i, j, v) in pairs.iter().take(args.top) {
        println!("  {:<32} {:<32} {v:+.5}", names[*i], names[*j]);
    }
    if let Some(csv) = &args.csv {
        write_csv(csv, names, &matrix).with_context(|| format!("writing {}", csv.display()))?;
        println!("\n{} entries written to {}", m * m, csv.display());
    }
    Ok(())
}

fn write_csv(path: &Path, names: &[String], matrix: &[f64]) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "feature_a,feature_b,value")?;
    for (k, v) in matrix.iter().enumerate() {
        let (a, b) = (&names[k / names.len()], &names[k % names.len()]);
        writeln!(out, "{},{},{v:e}", csv_field(a), csv_field(b))?;
    }
    out.flush()
}

/// A CSV field, quoted when it holds a comma, quote or line break (imported forests may name
/// their inputs freely).
fn csv_field(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\"")).into()
    } else {
        s.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(csv_field("snr_z"), "snr_z");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
