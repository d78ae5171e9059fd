//! `quakelens score`: runs the CNN and/or the forest over windows already in the lake (e.g.
//! after training, or with a new model) and writes `scores` / `magnitudes` (+ `forest_shap`).
//! Only windows the model has not scored yet are read, so a rerun adds nothing twice.

use anyhow::bail;
use clap::Args;

use quakelens_lake::{Lake, LakeLocation, LakeWriter, Table, WindowKey};
use quakelens_models::dataset::{load_examples, Selection};
use quakelens_pipeline::score::{forest_explanations, forest_magnitudes, Classifier, Scorer};

use super::{literal, parse_lake, runtime, set_threads, ModelOptions, DEFAULT_LAKE};

#[derive(Args, Debug)]
pub struct ScoreArgs {
    #[arg(long, env = "QUAKELENS_LAKE", default_value = DEFAULT_LAKE, value_parser = parse_lake)]
    lake: LakeLocation,
    #[command(flatten)]
    models: ModelOptions,
    /// Only windows matching this SQL condition on `w` (windows).
    #[arg(long)]
    filter: Option<String>,
    /// Worker threads (rayon and LibTorch; default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

/// `filter` and "not scored by `model` in `table` yet".
fn unscored(lake: &Lake, table: Table, model: &str, filter: &Option<String>) -> Option<String> {
    let mut conditions: Vec<String> = filter.iter().map(|f| format!("({f})")).collect();
    if lake.has(table) {
        conditions.push(format!(
            "w.window_id NOT IN (SELECT window_id FROM {table} WHERE model_hash = {})",
            literal(model)
        ));
    }
    (!conditions.is_empty()).then(|| conditions.join(" AND "))
}

/// `<what> N windows scored with KIND (hash): n class, …`.
fn print_scores(what: &str, scores: &[quakelens_lake::ScoreRecord], c: Classifier<'_>) {
    let classes = c.classes();
    let mut per_class = vec![0usize; classes.len()];
    for s in scores {
        per_class[s.predicted_index()] += 1;
    }
    let counts: Vec<String> = classes
        .iter()
        .zip(&per_class)
        .map(|(c, n)| format!("{n} {c}"))
        .collect();
    println!(
        "{what:<7} {} windows scored with {} ({}): {}",
        scores.len(),
        c.kind(),
        c.hash(),
        counts.join(", ")
    );
}

pub fn run(args: ScoreArgs) -> anyhow::Result<()> {
    set_threads(args.threads)?;
    let paths = args.models.paths();
    if paths.cnn.is_none() && paths.forest.is_none() {
        bail!("no model: pass --cnn and/or --forest, or train them first (`quakelens train cnn`)");
    }
    let scorer = Scorer::load(&paths, args.models.score_batch)?;
    let rt = runtime()?;
    let started = std::time::Instant::now();
    rt.block_on(async {
        let lake = Lake::open(&args.lake).await?;
        let format = *lake
            .format()
            .ok_or_else(|| anyhow::anyhow!("the lake at {} holds no windows", args.lake))?;
        scorer.check(&format)?;
        let mut writer = LakeWriter::open(&args.lake, format).await?;
        if let Some(c) = scorer.classifier() {
            let sel = Selection {
                spectrograms: !c.reads_waveforms(),
                waveforms: c.reads_waveforms(),
                filter: unscored(&lake, Table::Scores, &c.hash().0, &args.filter),
                ..Selection::default()
            };
            let examples = load_examples(&lake, &sel).await?;
            let keys: Vec<WindowKey> = examples.iter().map(WindowKey::of).collect();
            let inputs: Vec<&[f32]> = examples
                .iter()
                .map(|e| c.input(&e.spectrogram, &e.waveform))
                .collect();
            let scores = tokio::task::block_in_place(|| c.scores(&keys, &inputs, scorer.batch))?;
            writer.write_scores(&scores, &[]).await?;
            let what = if c.reads_waveforms() { "conv1d" } else { "cnn" };
            print_scores(what, &scores, c);
        }
        if let Some(f) = &scorer.forest {
            let forest = &f.forest;
            let hash = f.hash();
            // Magnitudes and their explanations are completed apart: a run that stopped
            // between the two tables is finished by the next.
            for table in [Table::Magnitudes, Table::ForestShap] {
                let sel = Selection {
                    inputs: forest.spec.features.clone(),
                    catalog: true,
                    filter: unscored(&lake, table, &hash, &args.filter),
                    ..Selection::default()
                };
                let examples = load_examples(&lake, &sel).await?;
                let map =
                    quakelens_models::forest::InputMap::new(&forest.spec.features, format.features);
                let absent = map.absent_catalog_inputs(examples.iter().map(|e| &e.catalog));
                if !examples.is_empty() && !absent.is_empty() {
                    bail!(
                        "forest {}: the lake's windows have no catalogue column {}; the forest cannot be used on this lake",
                        f.path,
                        absent.join(", ")
                    );
                }
                let keys: Vec<WindowKey> = examples.iter().map(WindowKey::of).collect();
                let rows: Vec<(Vec<f64>, Option<String>)> =
                    examples.iter().map(|e| (e.inputs.clone(), None)).collect();
                if table == Table::Magnitudes {
                    let (mags, unscored) = forest_magnitudes(forest, &keys, &rows);
                    writer.write_magnitudes(&mags, &[]).await?;
                    println!(
                        "forest  {} windows estimated with {hash}, {} without all inputs",
                        mags.len(),
                        unscored.len()
                    );
                    for u in unscored.iter().take(5) {
                        eprintln!("  unscored: {u}");
                    }
                } else {
                    let t = std::time::Instant::now();
                    let explained =
                        tokio::task::block_in_place(|| forest_explanations(forest, &keys, &rows))?;
                    let n = explained.len();
                    writer
                        .write_forest_shap(&[(forest.spec.features.clone(), explained)], &[])
                        .await?;
                    println!(
                        "shap    {n} windows explained (exact TreeSHAP, {} features each) in {:.2} s",
                        forest.n_features(),
                        t.elapsed().as_secs_f64()
                    );
                }
            }
        }
        anyhow::Ok(())
    })?;
    println!("{:.2} s", started.elapsed().as_secs_f64());
    Ok(())
}
