//! The study's pipeline end to end: a D-set written with h5py, the study's steps run in Python
//! exactly as its notebooks define them (`python/study_reference.py`), its CNN (a state_dict)
//! and forest (joblib, with its inputs and fill values) imported, and `quakelens run --dset` on
//! the same files: the same features, the same PNG bytes, the same logits, magnitudes and
//! TreeSHAP values. Bad inputs fail with errors that name what is wrong.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{sql_rows, stdout_if_ok};

fn python_dir() -> PathBuf {
    common::root().join("crates/quakelens-models/python")
}

fn python(py: &Path, script: &str, args: &[&str]) -> Output {
    let out = Command::new(py)
        .arg(python_dir().join(script))
        .args(args)
        .output()
        .expect("python starts");
    out
}

fn quakelens(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_quakelens"))
        .args(args)
        .output()
        .expect("quakelens starts")
}

fn read(path: &Path) -> Vec<f64> {
    quakelens_signal::reference::read_f64(path).unwrap()
}

/// One value per row of `query`, in the order of the study's traces (`trace` column first).
fn by_trace(lake: &Path, query: &str, traces: &[String]) -> Vec<Vec<f64>> {
    let rows = sql_rows(lake, query);
    let mut map = std::collections::HashMap::new();
    for r in rows {
        let mut cells = r.split('|');
        let trace = cells.next().unwrap().to_string();
        let values: Vec<f64> = cells
            .map(|c| {
                if c == "NULL" {
                    f64::NAN
                } else {
                    c.parse().unwrap()
                }
            })
            .collect();
        map.entry(trace).or_insert_with(Vec::new).push(values);
    }
    traces
        .iter()
        .map(|t| {
            map.remove(t)
                .unwrap_or_else(|| panic!("trace {t} not in the lake"))
                .concat()
        })
        .collect()
}

#[test]
fn the_study_pipeline_and_its_models_carry_over_exactly() {
    let Some(py) = quakelens_signal::reference::python_for_tests() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = |p: &str| dir.path().join(p);
    let s = |p: &str| d(p).display().to_string();
    let dset = d("dataset");
    stdout_if_ok(
        python(&py, "study_reference.py", &["dset", &s("dataset")]),
        "writing the D-set",
    );
    stdout_if_ok(
        python(
            &py,
            "study_reference.py",
            &["pipeline", &s("dataset"), &s("ref")],
        ),
        "the study's pipeline",
    );
    stdout_if_ok(
        python(
            &py,
            "import_study_cnn.py",
            &[
                &s("ref/cnn.pth"),
                &s("cnn.safetensors"),
                "--spectrogram",
                "log",
            ],
        ),
        "importing the CNN",
    );
    stdout_if_ok(
        python(
            &py,
            "export_sklearn_forest.py",
            &[
                &s("ref/forest.joblib"),
                &s("forest.arrow"),
                "--fill",
                &s("ref/fill.json"),
            ],
        ),
        "exporting the forest",
    );
    let out = quakelens(&[
        "run",
        "--dset",
        &dset.display().to_string(),
        "--image",
        "--lake",
        &s("lake"),
        "--cnn",
        &s("cnn.safetensors"),
        "--forest",
        &s("forest.arrow"),
        "--quiet",
        "--report",
        &s("report.json"),
    ]);
    let text = stdout_if_ok(out, "quakelens run --dset");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d("report.json")).unwrap()).unwrap();
    assert_eq!(report["windows"], 24, "{text}");
    assert_eq!(report["scored"], 24);
    assert_eq!(report["magnitudes"], 24);
    // Each station and part holds a (2, 2500), a (3, 2000) and a NaN trace: skipped, named.
    let skipped: Vec<String> = report["skipped_traces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(skipped.len(), 12, "{skipped:?}");
    assert!(skipped
        .iter()
        .any(|m| m.contains("NRCA.pre.two_rows") && m.contains("[2, 2500]")));
    assert!(skipped
        .iter()
        .any(|m| m.contains("MMO1.post.short") && m.contains("[3, 2000]")));
    assert!(skipped.iter().any(
        |m| m.contains("NRCA.post.nan") && m.contains("non-finite sample at row 1, sample 100")
    ));

    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d("ref/traces.json")).unwrap()).unwrap();
    let traces: Vec<String> = meta["traces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(traces.len(), 24);
    let lake = d("lake");
    let trace = "CAST(w.catalog['trace_name'] AS VARCHAR) AS trace";

    // Features, named and defined as the study's, ≤ 1e-12 relative.
    let names = quakelens_signal::features::FeatureSet::Study.column_names();
    let columns: Vec<String> = names.iter().map(|n| format!("f.{n}")).collect();
    let ours = by_trace(
        &lake,
        &format!(
            "SELECT {trace}, {} FROM windows w JOIN features f USING (window_id)",
            columns.join(", ")
        ),
        &traces,
    );
    let want = read(&d("ref/features.f64"));
    let ours: Vec<f64> = ours.concat();
    let err = quakelens_signal::reference::compare::max_rel_err(&ours, &want, 0.0);
    eprintln!("study features: max relative error {err:.2e}");
    assert!(err <= 1e-12, "features differ by {err:e}");
    // Rows follow the file: channel 0 is row 0, recorded as the given components.
    assert_eq!(
        sql_rows(&lake, "SELECT DISTINCT channel_order FROM windows"),
        vec!["ENZ"]
    );

    // Images: the PNG's bytes exactly, the normalised floats ≤ 1e-6.
    let spectrograms = by_trace(
        &lake,
        &format!("SELECT {trace}, unnest(w.spectrogram) FROM windows w"),
        &traces,
    );
    let stats = quakelens_signal::spectrogram::ChannelStats::default();
    let per = 33 * 153;
    let ours: Vec<f64> = spectrograms.concat();
    let bytes: Vec<f64> = ours
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = (i / per) % 3;
            quakelens_signal::spectrogram::image_byte(v as f32, stats.mean[c], stats.std[c]) as f64
        })
        .collect();
    let want_bytes = read(&d("ref/bytes.f64"));
    assert_eq!(bytes.len(), want_bytes.len());
    let differing = bytes
        .iter()
        .zip(&want_bytes)
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(
        differing, 0,
        "{differing} bytes differ from the study's PNGs"
    );
    let err =
        quakelens_signal::reference::compare::max_abs_diff(&ours, &read(&d("ref/images.f64")));
    eprintln!("study images: bytes identical, normalised values max error {err:.2e}");
    assert!(err <= 1e-6, "{err:e}");

    // The imported CNN's logits ≤ 1e-5 of PyTorch's on the study's images.
    let logits = by_trace(
        &lake,
        &format!("SELECT {trace}, s.logit_foreshock, s.logit_aftershock FROM windows w JOIN scores s USING (window_id)"),
        &traces,
    );
    let err = quakelens_signal::reference::compare::max_abs_diff(
        &logits.concat(),
        &read(&d("ref/logits.f64")),
    );
    eprintln!("imported CNN: logits max error {err:.2e}");
    assert!(err <= 1e-5, "{err:e}");

    // The imported forest (the study's inputs, missing cells filled with its means) ≤ 1e-6,
    // and its TreeSHAP values equal shap.TreeExplainer's.
    let magnitudes = by_trace(
        &lake,
        &format!(
            "SELECT {trace}, m.magnitude_pred FROM windows w JOIN magnitudes m USING (window_id)"
        ),
        &traces,
    );
    let err = quakelens_signal::reference::compare::max_abs_diff(
        &magnitudes.concat(),
        &read(&d("ref/magnitudes.f64")),
    );
    eprintln!("imported forest: predictions max error {err:.2e}");
    assert!(err <= 1e-6, "{err:e}");
    let inputs: Vec<String> = meta["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert!(
        inputs.contains(&"snr_db".to_string())
            && inputs.contains(&"path_ep_distance_km".to_string())
    );
    assert!(!inputs.contains(&"receiver_latitude".to_string()));
    let order: Vec<String> = inputs
        .iter()
        .enumerate()
        .map(|(i, n)| format!("WHEN '{n}' THEN {i}"))
        .collect();
    let shap = by_trace(
        &lake,
        &format!(
            "SELECT trace, value FROM (SELECT {trace}, s.value, CASE s.feature {} END AS k \
             FROM windows w JOIN forest_shap s USING (window_id)) ORDER BY trace, k",
            order.join(" ")
        ),
        &traces,
    );
    let err = quakelens_signal::reference::compare::max_abs_diff(
        &shap.concat(),
        &read(&d("ref/shap.f64")),
    );
    eprintln!("TreeSHAP against shap.TreeExplainer: max error {err:.2e}");
    assert!(err <= 1e-6, "{err:e}");

    // The study's CNN explanations: the predicted class's logit, images quantised to 8 bits on
    // each batch's min–max, shap's inpainting masker. The explained output and the base value
    // (the fully masked image) equal PyTorch's on the study's own quantisation and shap's
    // masker; the values add up to their difference.
    let out = quakelens(&[
        "explain",
        "--lake",
        &s("lake"),
        "--cnn",
        &s("cnn.safetensors"),
        "--masker",
        "inpaint",
        "--target",
        "top-class",
        "--batch",
        "10",
        "--max-evals",
        "120",
    ]);
    let said = stdout_if_ok(out, "explain --masker inpaint");
    assert!(
        said.contains("24 windows explained (partition-inpaint"),
        "{said}"
    );
    let ends = sql_rows(
        &lake,
        &format!(
            "SELECT DISTINCT {trace}, c.batch, c.target, c.output, c.base_value \
             FROM cnn_shap c JOIN windows w USING (window_id) WHERE c.method = 'partition-inpaint'"
        ),
    );
    assert_eq!(ends.len(), 24, "one output per window: {ends:?}");
    let mut batches: std::collections::BTreeMap<String, Vec<usize>> = Default::default();
    let mut ours = vec![[0.0f64; 3]; 24];
    for row in &ends {
        let cells: Vec<&str> = row.split('|').collect();
        let t = traces.iter().position(|x| x == cells[0]).unwrap();
        batches.entry(cells[1].to_string()).or_default().push(t);
        let class = match cells[2] {
            "logit:foreshock" => 0.0,
            "logit:aftershock" => 1.0,
            other => panic!("target {other}"),
        };
        ours[t] = [class, cells[3].parse().unwrap(), cells[4].parse().unwrap()];
    }
    let sizes: Vec<usize> = batches.values().map(Vec::len).collect();
    assert_eq!(sizes.iter().sum::<usize>(), 24);
    assert_eq!(sizes.len(), 3, "24 windows in batches of 10: {sizes:?}");
    std::fs::write(
        d("batches.json"),
        serde_json::to_string(&batches.values().collect::<Vec<_>>()).unwrap(),
    )
    .unwrap();
    stdout_if_ok(
        python(
            &py,
            "study_reference.py",
            &["explain-ends", &s("ref"), &s("batches.json")],
        ),
        "the study's explanation ends",
    );
    let want = read(&d("ref/ends.f64"));
    let ours: Vec<f64> = ours.concat();
    let classes_differ = (0..24).filter(|&t| ours[t * 3] != want[t * 3]).count();
    assert_eq!(
        classes_differ, 0,
        "explained classes: ours {ours:?}, study {want:?}"
    );
    let err = quakelens_signal::reference::compare::max_abs_diff(&ours, &want);
    eprintln!("study explanations: output and base value max error {err:.2e}");
    assert!(err <= 1e-4, "{err:e}");
    let additive: usize = sql_rows(
        &lake,
        "SELECT count(*) FROM (SELECT window_id, sum(value) AS total, max(output) - max(base_value) AS gap \
         FROM cnn_shap WHERE method = 'partition-inpaint' GROUP BY window_id) \
         WHERE abs(total - gap) <= 1e-3 * greatest(abs(gap), 1.0)",
    )[0]
    .parse()
    .unwrap();
    assert_eq!(additive, 24);
    // The study's figures: class maps of correctly predicted windows, the decision plot.
    for (figure, extra) in [
        (
            "class-means",
            vec!["--method", "partition-inpaint", "--mode", "study"],
        ),
        ("decision", vec!["--top", "12"]),
        ("beeswarm", vec!["--filter", "w.magnitude >= 2.5"]),
    ] {
        let png = s(&format!("{figure}.png"));
        let mut args = vec![
            "plot",
            figure,
            "--lake",
            lake.to_str().unwrap(),
            "--out",
            &png,
        ];
        args.extend(extra);
        let said = stdout_if_ok(quakelens(&args), figure);
        assert!(said.contains("pixels)"), "{said}");
    }

    // Training on the same input set: the study's inputs and fill values, random 80/20 split.
    let out = quakelens(&[
        "train",
        "forest",
        "--lake",
        &s("lake"),
        "--out",
        &s("own.arrow"),
        "--inputs",
        "study",
        "--split",
        "random",
        "--test",
        "0.2",
        "--valid",
        "0",
        "--trees",
        "20",
        "--quiet",
    ]);
    stdout_if_ok(out, "train forest --inputs study");
    let own = quakelens_models::forest::Forest::load(&d("own.arrow")).unwrap();
    let mut ours_inputs = own.spec.features.clone();
    let mut theirs = inputs.clone();
    ours_inputs.sort();
    theirs.sort();
    assert_eq!(ours_inputs, theirs, "the study's input set");
    assert!(own.spec.fill.is_some());
    assert_eq!(
        own.spec.feature_set,
        Some(quakelens_signal::features::FeatureSet::Study)
    );

    // A forest of the physical feature set is refused on this lake, naming both.
    let mut physical = own.clone();
    physical.spec.feature_set = Some(quakelens_signal::features::FeatureSet::Physical);
    physical.save(&d("physical.arrow")).unwrap();
    let out = quakelens(&[
        "score",
        "--lake",
        &s("lake"),
        "--forest",
        &s("physical.arrow"),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("physical") && err.contains("study"),
        "{err}"
    );
    // A forest needing an input the lake does not have.
    let mut alien = own.clone();
    alien.spec.features[0] = "station_mood".into();
    alien.spec.fill = None;
    alien.save(&d("alien.arrow")).unwrap();
    let out = quakelens(&["score", "--lake", &s("lake"), "--forest", &s("alien.arrow")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("station_mood"),
        "{err}"
    );
    // The CNN refuses windows of another input (log1p spectrograms, not the study's PNGs).
    let plain = quakelens(&[
        "run",
        "--dset",
        &dset.display().to_string(),
        "--lake",
        &s("plain"),
        "--cnn",
        &s("cnn.safetensors"),
        "--quiet",
    ]);
    let err = String::from_utf8_lossy(&plain.stderr);
    assert!(
        !plain.status.success() && err.contains("log+png") && err.contains("these windows are log"),
        "{err}"
    );
}

#[test]
fn bad_study_models_are_refused_with_what_is_wrong() {
    let Some(py) = quakelens_signal::reference::python_for_tests() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().display().to_string();
    stdout_if_ok(
        python(&py, "study_reference.py", &["bad-pth", &work]),
        "bad state_dicts",
    );
    for (file, says) in [
        ("missing.pth", "missing parameters: BatchNorm2.running_var"),
        (
            "extra.pth",
            "parameters the study's CNN does not have: fc3.weight",
        ),
        (
            "misshapen.pth",
            "fc1.weight has shape (128, 100), the study's CNN has (128, 9728)",
        ),
    ] {
        let out = python(
            &py,
            "import_study_cnn.py",
            &[
                &format!("{work}/{file}"),
                &format!("{work}/out.safetensors"),
            ],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(says), "{file}: {err}");
    }
    assert!(!dir.path().join("out.safetensors").exists());
    stdout_if_ok(
        python(&py, "study_reference.py", &["bad-joblib", &work]),
        "a linear model",
    );
    let out = python(
        &py,
        "export_sklearn_forest.py",
        &[
            &format!("{work}/linear.joblib"),
            &format!("{work}/out.arrow"),
            "--features",
            "a",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("a LinearRegression is not a tree regressor"),
        "{err}"
    );
}
