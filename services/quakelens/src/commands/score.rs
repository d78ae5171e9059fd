//! `quakelens score`: runs the CNN and/or the forest over windows already in the lake (e.g.
//! after training, or with a new model) and writes `scores` / `magnitudes`.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;

use quakelens_lake::{Lake, LakeManifest, LakeWriter, WindowKey};
use quakelens_models::dataset::{load_examples, Selection};
use quakelens_pipeline::score::{cnn_scores, forest_explanations, forest_magnitudes, Scorer};

use super::{runtime, set_threads, ModelOptions, DEFAULT_LAKE};

#[derive(Args, Debug)]
pub struct ScoreArgs {
    #[arg(long, env = "QUAKELENS_LAKE", default_value = DEFAULT_LAKE)]
    lake: PathBuf,
    #[command(flatten)]
    models: ModelOptions,
    /// Only windows matching this SQL condition on `w` (windows).
    #[arg(long)]
    filter: Option<String>,
    /// Worker threads (rayon and LibTorch; default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

pub fn run(args: ScoreArgs) -> anyhow::Result<()> {
    set_threads(args.threads)?;
    let paths = args.models.paths();
    if paths.cnn.is_none() && paths.forest.is_none() {
        bail!("no model: pass --cnn and/or --forest, or train them first (`quakelens train cnn`)");
    }
    let scorer = Scorer::load(&paths, args.models.score_batch)?;
    let manifest = LakeManifest::load(&args.lake)?
        .with_context(|| format!("no lake at {}", args.lake.display()))?;
    let writer = LakeWriter::open(&args.lake, manifest.spectrogram_shape)?;
    let sel = Selection {
        spectrograms: scorer.cnn.is_some(),
        inputs: scorer
            .forest
            .as_ref()
            .map(|(f, _)| f.spec.features.clone())
            .unwrap_or_default(),
        only_labelled: false,
        filter: args.filter.clone(),
    };
    let examples = runtime()?.block_on(async {
        let lake = Lake::open(&args.lake).await?;
        anyhow::Ok(load_examples(&lake, &sel).await?)
    })?;
    let started = std::time::Instant::now();
    let keys: Vec<WindowKey> = examples.iter().map(WindowKey::of).collect();
    if let Some(model) = &scorer.cnn {
        let inputs: Vec<&[f32]> = examples.iter().map(|e| e.spectrogram.as_slice()).collect();
        let scores = cnn_scores(model, &keys, &inputs, scorer.batch)?;
        writer.write_scores(&scores)?;
        let after = scores.iter().filter(|s| s.p_aftershock > 0.5).count();
        println!(
            "cnn     {} windows scored with {} ({}), {after} predicted aftershocks",
            scores.len(),
            model.kind.name(),
            model.hash
        );
    }
    if let Some((forest, _)) = &scorer.forest {
        let rows: Vec<Vec<f64>> = examples.iter().map(|e| e.inputs.clone()).collect();
        let (mags, unscored) = forest_magnitudes(forest, &keys, &rows);
        writer.write_magnitudes(&mags)?;
        println!(
            "forest  {} windows estimated with {}, {} without all inputs",
            mags.len(),
            forest.hash.as_ref().map(|h| h.0.as_str()).unwrap_or("?"),
            unscored.len()
        );
        for u in unscored.iter().take(5) {
            eprintln!("  unscored: {u}");
        }
        let t = std::time::Instant::now();
        let explained = forest_explanations(forest, &keys, &rows)?;
        writer.write_forest_shap(&explained, &forest.spec.features)?;
        println!(
            "shap    {} windows explained (exact TreeSHAP, {} features each) in {:.2} s",
            explained.len(),
            forest.n_features(),
            t.elapsed().as_secs_f64()
        );
    }
    println!("{:.2} s", started.elapsed().as_secs_f64());
    Ok(())
}
