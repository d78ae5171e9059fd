//! Train → save → score → SQL through the binary, on synthetic data the generator labels.

use std::path::Path;
use std::process::{Command, Output};

fn quakelens<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_quakelens"))
        .args(args)
        .output()
        .expect("binary runs");
    assert!(
        out.status.success(),
        "quakelens {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn sql_count(lake: &str, query: &str) -> usize {
    let text = stdout(&quakelens(&["sql", "--lake", lake, query]));
    text.lines()
        .filter_map(|l| l.trim().trim_matches('|').trim().parse::<usize>().ok())
        .next()
        .unwrap_or_else(|| panic!("no count in {text}"))
}

/// Width, height and number of distinct colours of a PNG.
fn decode_png(path: &Path) -> (u32, u32, usize) {
    let file = std::io::BufReader::new(std::fs::File::open(path).unwrap());
    let mut reader = png::Decoder::new(file).read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let colours: std::collections::HashSet<&[u8]> = buf[..info.buffer_size()].chunks(3).collect();
    (info.width, info.height, colours.len())
}

#[test]
fn cnn_and_forest_train_to_target_and_score_every_window() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n).display().to_string();
    let (lake, cnn, forest) = (d("lake"), d("cnn.safetensors"), d("forest.arrow"));
    quakelens(&[
        "run",
        "--synthetic",
        "700",
        "--stations",
        "4",
        "--lake",
        &lake,
        "--synthetic-dir",
        &d("syn"),
        "--quiet",
        "--no-models",
    ]);
    let windows = sql_count(
        &lake,
        "SELECT count(*) FROM windows WHERE label IS NOT NULL",
    );
    assert!(windows >= 690, "{windows} labelled windows");

    let out = quakelens(&[
        "train", "cnn", "--lake", &lake, "--out", &cnn, "--epochs", "4", "--quiet",
    ]);
    let text = stdout(&out);
    assert!(
        text.contains("confusion") && text.contains("split by event"),
        "{text}"
    );
    let report = json(Path::new(&format!("{cnn}.report.json")));
    let acc = report["test"]["accuracy"].as_f64().unwrap();
    assert!(acc >= 0.95, "held-out accuracy {acc}");
    assert!(report["test"]["n"].as_u64().unwrap() >= 50);
    let hash = report["model"]["hash"].as_str().unwrap().to_string();
    assert!(hash.starts_with("sha256:"));

    quakelens(&[
        "train", "forest", "--lake", &lake, "--out", &forest, "--trees", "60", "--quiet",
    ]);
    let freport = json(Path::new(&format!("{forest}.report.json")));
    let r2 = freport["test"]["r2"].as_f64().unwrap();
    assert!(r2 > 0.8, "held-out R² {r2}");
    assert_eq!(freport["inputs"].as_array().unwrap().len(), 69);

    quakelens(&["score", "--lake", &lake, "--cnn", &cnn, "--forest", &forest]);
    assert_eq!(sql_count(&lake, "SELECT count(*) FROM scores"), windows);
    assert_eq!(
        sql_count(
            &lake,
            &format!("SELECT count(*) FROM scores WHERE model_hash = '{hash}'")
        ),
        windows
    );
    assert_eq!(sql_count(&lake, "SELECT count(*) FROM magnitudes"), windows);
    // Every magnitude is explained: 69 TreeSHAP values per window that add up to it.
    assert_eq!(
        sql_count(&lake, "SELECT count(*) FROM forest_shap"),
        69 * windows
    );
    assert_eq!(
        sql_count(
            &lake,
            "SELECT count(*) FROM (SELECT f.window_id, sum(f.value) + max(f.base_value) AS total, \
             max(m.magnitude_pred) AS pred FROM forest_shap f JOIN magnitudes m USING (window_id) \
             GROUP BY f.window_id) WHERE abs(total - pred) < 1e-9"
        ),
        windows
    );
    // Image SHAP of the CNN for three windows: a row per spectrogram cell, adding up to
    // f(window) − f(masked window) for each.
    let out = quakelens(&[
        "explain",
        "--lake",
        &lake,
        "--cnn",
        &cnn,
        "--limit",
        "3",
        "--max-evals",
        "200",
    ]);
    assert!(
        stdout(&out).contains("3 windows explained"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        sql_count(&lake, "SELECT count(*) FROM cnn_shap"),
        3 * 3 * 33 * 153
    );
    assert_eq!(
        sql_count(
            &lake,
            "SELECT count(*) FROM (SELECT window_id, sum(value) AS total, max(output) - max(base_value) AS gap \
             FROM cnn_shap GROUP BY window_id) WHERE abs(total - gap) <= 1e-3 * greatest(abs(gap), 1.0)"
        ),
        3
    );
    assert_eq!(
        sql_count(
            &lake,
            "SELECT count(DISTINCT freq_hz) * 1000 + count(DISTINCT time_s) FROM cnn_shap \
             WHERE freq_hz BETWEEN 0 AND 50 AND time_s > 0.3 AND time_s < 25"
        ),
        33 * 1000 + 153
    );
    // Pictures of those explanations: PNGs of the size the command reports, with real content.
    let window_id = {
        let text = stdout(&quakelens(&[
            "sql",
            "--lake",
            &lake,
            "SELECT min(window_id) AS w FROM cnn_shap",
        ]));
        text.lines()
            .filter_map(|l| {
                let cell = l.trim().trim_matches('|').trim();
                (cell.len() == 16 && cell.chars().all(|c| c.is_ascii_hexdigit()))
                    .then(|| cell.to_string())
            })
            .next()
            .unwrap_or_else(|| panic!("no window id in {text}"))
    };
    // Colour maps give the heat maps many colours; the waterfall has bars, text and a frame.
    for (figure, extra, least) in [
        ("window", vec!["--window-id", window_id.as_str()], 30),
        ("class-means", vec![], 30),
        ("class-means", vec!["--by", "predicted"], 30),
        ("beeswarm", vec!["--top", "15"], 10),
        (
            "beeswarm",
            vec!["--top", "15", "--filter", "w.magnitude >= 0"],
            10,
        ),
        ("decision", vec!["--top", "10"], 10),
        ("waterfall", vec!["--window-id", window_id.as_str()], 3),
    ] {
        let png = d(&format!("{figure}.png"));
        let mut args = vec!["plot", figure, "--lake", &lake, "--out", &png];
        args.extend(extra);
        let said = stdout(&quakelens(&args));
        let (width, height, colours) = decode_png(Path::new(&png));
        assert!(
            said.contains(&format!("({width} × {height} pixels)")),
            "{said}"
        );
        assert!(width > 400 && height > 300, "{figure}: {width} × {height}");
        assert!(colours >= least, "{figure}: only {colours} colours");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_quakelens"))
        .args([
            "plot",
            "window",
            "--lake",
            &lake,
            "--window-id",
            "nope",
            "--out",
            &d("x.png"),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no window nope"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!Path::new(&d("x.png")).exists());
    // Interaction values of the forest for one window: each feature's row adds up to its
    // value in forest_shap, and the whole matrix plus the base value to the magnitude.
    let csv = d("interactions.csv");
    let said = stdout(&quakelens(&[
        "interactions",
        "--lake",
        &lake,
        "--forest",
        &forest,
        "--window-id",
        &window_id,
        "--csv",
        &csv,
    ]));
    assert!(
        said.contains("main effects") && said.contains("4761 entries"),
        "{said}"
    );
    let mut rows: std::collections::BTreeMap<String, f64> = Default::default();
    let text = std::fs::read_to_string(&csv).unwrap();
    for line in text.lines().skip(1) {
        let cells: Vec<&str> = line.split(',').collect();
        *rows.entry(cells[0].to_string()).or_default() += cells[2].parse::<f64>().unwrap();
    }
    assert_eq!((text.lines().count(), rows.len()), (69 * 69 + 1, 69));
    let values: Vec<String> = rows
        .iter()
        .map(|(feature, sum)| format!("('{feature}', {sum:e})"))
        .collect();
    assert_eq!(
        sql_count(
            &lake,
            &format!(
                "SELECT count(*) FROM forest_shap f JOIN (SELECT column1 AS feature, \
                 column2 AS row_sum FROM (VALUES {})) r ON f.feature = r.feature \
                 WHERE f.window_id = '{window_id}' AND abs(f.value - r.row_sum) < 1e-9",
                values.join(", ")
            )
        ),
        69
    );
    let total: f64 = rows.values().sum();
    assert_eq!(
        sql_count(
            &lake,
            &format!(
                "SELECT count(*) FROM magnitudes m JOIN (SELECT DISTINCT window_id, base_value \
                 FROM forest_shap) f ON m.window_id = f.window_id \
                 WHERE m.window_id = '{window_id}' \
                 AND abs(m.magnitude_pred - f.base_value - ({total:e})) < 1e-9"
            )
        ),
        1
    );
    // Scoring again with the same model replaces rows instead of adding them.
    quakelens(&["score", "--lake", &lake, "--cnn", &cnn]);
    assert_eq!(sql_count(&lake, "SELECT count(*) FROM scores"), windows);
    // Most labels agree with the predictions (the model saw 70 % of these events).
    let agree = sql_count(
        &lake,
        "SELECT count(*) FROM scores s JOIN windows w USING (window_id) \
         WHERE (s.p_aftershock > 0.5) = (w.label = 1)",
    );
    assert!(agree as f64 >= 0.95 * windows as f64, "{agree}/{windows}");

    // The embedded run scores as it goes when given models.
    let lake2 = d("lake2");
    let out = quakelens(&[
        "run",
        "--synthetic",
        "20",
        "--stations",
        "2",
        "--seed",
        "99",
        "--lake",
        &lake2,
        "--synthetic-dir",
        &d("syn2"),
        "--quiet",
        "--cnn",
        &cnn,
        "--forest",
        &forest,
        "--explain-cnn",
        "60",
    ]);
    let text = stdout(&out);
    assert!(text.contains("20 CNN scores explained"), "{text}");
    assert_eq!(
        sql_count(&lake2, "SELECT count(DISTINCT window_id) FROM cnn_shap"),
        20
    );
    assert!(text.contains("20 windows scored"), "{text}");
    assert!(text.contains("20 magnitudes estimated"), "{text}");
    assert_eq!(sql_count(&lake2, "SELECT count(*) FROM scores"), 20);
    assert_eq!(sql_count(&lake2, "SELECT count(*) FROM magnitudes"), 20);
    assert!(text.contains("20 magnitudes explained"), "{text}");
    assert_eq!(
        sql_count(&lake2, "SELECT count(DISTINCT window_id) FROM forest_shap"),
        20
    );
}

#[test]
fn bad_models_and_empty_lakes_fail_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("model.safetensors");
    std::fs::write(&bogus, b"definitely not a model").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_quakelens"))
        .args([
            "score",
            "--lake",
            &dir.path().display().to_string(),
            "--cnn",
        ])
        .arg(&bogus)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("model.safetensors"), "{err}");

    // Asking for a GPU that is not there (or a device that does not exist) is an error, not a crash.
    let out = Command::new(env!("CARGO_BIN_EXE_quakelens"))
        .args([
            "score",
            "--lake",
            &dir.path().display().to_string(),
            "--cnn",
        ])
        .arg(&bogus)
        .env("QUAKELENS_DEVICE", "cuda:99")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "clean failure, no panic");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("QUAKELENS_DEVICE=cuda:99"), "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_quakelens"))
        .args(["train", "cnn", "--lake"])
        .arg(dir.path().join("nothing"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no lake"), "{err}");
}

#[test]
fn laurenti_dset_files_are_read_labelled_and_short_traces_counted() {
    let Some(py) = quakelens_signal::reference::python_for_tests() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dset");
    std::fs::create_dir_all(&data).unwrap();
    quakelens_models::reference::run(
        &py,
        dir.path(),
        "dset",
        &[data.display().to_string(), "NRCA".into(), "7".into()],
    )
    .unwrap();
    let lake = dir.path().join("lake").display().to_string();
    let out = quakelens(&[
        "run",
        "--dset",
        &data.display().to_string(),
        "--lake",
        &lake,
        "--quiet",
        "--no-models",
    ]);
    let text = stdout(&out);
    assert!(text.contains("skipped    2 D-set traces"), "{text}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("shape [2, 2500]"),
        "the reason names the shape"
    );
    assert_eq!(sql_count(&lake, "SELECT count(*) FROM windows"), 14);
    assert_eq!(
        sql_count(
            &lake,
            "SELECT count(*) FROM windows WHERE label = 0 AND mode = 'dset'"
        ),
        7
    );
    assert_eq!(
        sql_count(&lake, "SELECT count(*) FROM windows WHERE label = 1"),
        7
    );
    assert_eq!(
        sql_count(&lake, "SELECT count(*) FROM windows WHERE magnitude IS NOT NULL AND p_travel_sec IS NOT NULL AND station = 'NRCA'"),
        14
    );
    assert_eq!(sql_count(&lake, "SELECT count(*) FROM features"), 14);
    // Time to failure from each row's source_origin_time, counted from the Norcia mainshock.
    assert_eq!(
        sql_count(
            &lake,
            "SELECT count(*) FROM windows WHERE abs(ttf_s - (\
             extract(epoch FROM to_timestamp(catalog['source_origin_time'])) - \
             extract(epoch FROM to_timestamp('2016-10-30T07:40:17Z')))) < 1e-3"
        ),
        14
    );
    assert_eq!(
        sql_count(
            &lake,
            "SELECT count(*) FROM windows WHERE (ttf_s < 0) = (label = 0)"
        ),
        14
    );
}

#[test]
fn import_conv1d_turns_a_state_dict_into_a_model_file_and_refuses_others() {
    use quakelens_models::conv1d::{Conv1dNet, WaveformModel};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _net = Conv1dNet::new(&vs.root(), 9);
    let state = d.join("state.safetensors");
    let named: Vec<(String, tch::Tensor)> = vs.variables().into_iter().collect();
    tch::Tensor::write_safetensors(&named, &state).unwrap();
    let model = d.join("models/paper.safetensors");
    let out = stdout(&quakelens(&[
        "import",
        "conv1d",
        &state.display().to_string(),
        "--out",
        &model.display().to_string(),
    ]));
    let loaded = WaveformModel::load(&model, tch::Device::Cpu).unwrap();
    assert_eq!(loaded.classes.len(), 9);
    assert!(out.contains("9 classes") && out.contains("middle"), "{out}");
    assert!(out.contains(&loaded.hash.to_string()), "{out}");

    let bogus = d.join("weights.pt");
    std::fs::write(&bogus, b"PK\x03\x04 not really a zip").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_quakelens"))
        .args(["import", "conv1d"])
        .arg(&bogus)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "clean failure, no panic");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("weights.pt") && err.contains("torch.save"),
        "{err}"
    );
}

/// Runs quakelens expecting failure; returns stderr.
fn failing<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_quakelens"))
        .args(args)
        .output()
        .expect("binary runs");
    assert_eq!(out.status.code(), Some(1), "{args:?}: a clean failure");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The paper's 9 classes on a synthetic sequence with an intermediate one: the run prints the
/// mainshock and the middle span, and `train conv1d --classes 9` takes them as printed.
#[test]
fn nine_classes_train_on_a_sequence_with_a_middle_sequence() {
    use quakelens_models::conv1d::WaveformModel;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = |p: &str| d.join(p).display().to_string();
    let lake = path("lake");
    let out = stdout(&quakelens(&[
        "run",
        "--synthetic",
        "108",
        "--synthetic-dir",
        &path("syn"),
        "--sequence",
        "--middle",
        "--lake",
        &lake,
        "--waveforms",
    ]));
    let printed = |what: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix("sequence   ")?.strip_prefix(what))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no {what} in {out}"))
            .to_string()
    };
    let (mainshock, middle) = (printed("mainshock"), printed("middle"));
    let model = path("ttf9.safetensors");
    let trained = stdout(&quakelens(&[
        "train",
        "conv1d",
        "--lake",
        &lake,
        "--classes",
        "9",
        "--mainshock",
        &mainshock,
        "--middle",
        &middle,
        "--epochs",
        "1",
        "--out",
        &model,
        "--quiet",
    ]));
    assert!(trained.contains("in 9 classes (pre_1"), "{trained}");
    let loaded = WaveformModel::load(Path::new(&model), tch::Device::Cpu).unwrap();
    assert_eq!(loaded.classes.len(), 9);
    assert_eq!(loaded.classes[4], "middle");
    let report = json(&d.join("ttf9.safetensors.report.json"));
    let per_class: Vec<u64> = report["labels"]["events_per_class"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    // 27 slots a station, 13 before the mainshock, slots 7..10 the middle: 12 events; the
    // other 40 foreshocks in quarters of 10, the 56 aftershocks balanced down to 40.
    assert_eq!(per_class, [10, 10, 10, 10, 12, 10, 10, 10, 10], "{trained}");
    for part in ["valid", "test"] {
        assert_eq!(report[part]["recall"].as_array().unwrap().len(), 9);
        assert_eq!(report[part]["normalized"].as_array().unwrap().len(), 9);
    }
}

#[test]
fn train_conv1d_reads_a_waveform_lake_into_time_to_failure_classes() {
    use quakelens_models::conv1d::WaveformModel;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = |p: &str| d.join(p).display().to_string();
    let (lake, plain) = (path("lake"), path("plain"));
    quakelens(&[
        "run",
        "--synthetic",
        "48",
        "--synthetic-dir",
        &path("syn"),
        "--lake",
        &lake,
        "--waveforms",
    ]);
    assert_eq!(
        sql_count(
            &lake,
            "SELECT count(*) FROM windows WHERE cardinality(waveform) = 7500"
        ),
        48
    );
    // The mainshock between the middle two events: their windows start 5 s before the P.
    let generated = std::fs::read_dir(d.join("syn"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let catalog = std::fs::read_to_string(generated.join("catalog.csv")).unwrap();
    let mut p: Vec<String> = catalog
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(2).unwrap().to_string())
        .collect();
    p.sort();
    let mainshock = p[p.len() / 2].clone();
    let model = path("models/ttf4.safetensors");
    let out = stdout(&quakelens(&[
        "train",
        "conv1d",
        "--lake",
        &lake,
        "--classes",
        "4",
        "--mainshock",
        &mainshock,
        "--epochs",
        "1",
        "--out",
        &model,
        "--quiet",
    ]));
    assert!(out.contains("in 4 classes (pre_early"), "{out}");
    assert!(
        out.contains("mean per-class recall") && out.contains("post_late"),
        "{out}"
    );
    let loaded = WaveformModel::load(Path::new(&model), tch::Device::Cpu).unwrap();
    assert_eq!(
        loaded.classes,
        ["pre_early", "pre_late", "post_early", "post_late"]
    );
    let report = json(&d.join("models/ttf4.safetensors.report.json"));
    assert_eq!(report["model"]["hash"], loaded.hash.0.as_str());
    assert_eq!(report["labels"]["split"], "TimeOrdered");
    let test = &report["test"];
    assert_eq!(test["recall"].as_array().unwrap().len(), 4);
    for row in test["normalized"].as_array().unwrap() {
        let sum: f64 = row
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .sum();
        assert!(sum == 0.0 || (sum - 1.0).abs() < 1e-9, "{row}");
    }
    let windows: Vec<u64> = report["windows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let counts: u64 = report["labels"]["events_per_class"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(
        windows.iter().sum::<u64>(),
        counts,
        "one window per event here"
    );

    // `score --cnn` takes the CONV1D file and scores every window once, in its classes.
    for _ in 0..2 {
        quakelens(&["score", "--lake", &lake, "--cnn", &model]);
    }
    assert_eq!(
        sql_count(
            &lake,
            "SELECT count(*) FROM scores WHERE model_kind = 'quakelens-conv1d' \
             AND cardinality(probabilities) = 4 AND predicted_class LIKE 'p%t_%'"
        ),
        48
    );
    // `explain` takes it too: Owen values of channel × 5 s segments and exact Shapley values
    // of six bands land in `waveform_shap`, and each explanation adds up there, in SQL.
    let explain = |extra: &[&'static str]| {
        let mut args = vec![
            "explain",
            "--lake",
            &lake,
            "--cnn",
            &model,
            "--limit",
            "2",
            "--max-evals",
            "30",
            "--segment-s",
            "5",
        ];
        args.extend_from_slice(extra);
        args
    };
    let top = ["--target", "top-class"];
    let out = stdout(&quakelens(&explain(&top)));
    assert!(out.contains("waveform_shap  2 windows explained"), "{out}");
    assert_eq!(
        sql_count(
            &lake,
            "SELECT count(*) FROM waveform_shap WHERE method = 'partition' AND channel IN (0, 1, 2) \
             AND end_s - start_s = 5 AND low_hz = 0 AND high_hz = 50 AND target LIKE 'logit:p%'"
        ),
        2 * 3 * 5
    );
    assert_eq!(
        sql_count(
            &lake,
            "SELECT count(*) FROM waveform_shap WHERE method = 'bandstop' AND channel IS NULL \
             AND start_s = 0 AND end_s = 25 AND budget = 66"
        ),
        2 * 6
    );
    assert_eq!(
        sql_count(
            &lake,
            "SELECT count(*) FROM (SELECT window_id, method, sum(value) AS s, \
             max(output - base_value) AS d FROM waveform_shap GROUP BY window_id, method) \
             WHERE abs(s - d) <= 1e-4 + 1e-4 * abs(d)"
        ),
        4,
        "every explanation adds up to output - base_value"
    );
    // Explained windows are skipped the next time.
    let mut again = explain(&top);
    again.extend([
        "--filter",
        "w.window_id IN (SELECT window_id FROM waveform_shap)",
    ]);
    let out = stdout(&quakelens(&again));
    assert!(out.contains("waveform_shap  0 windows explained"), "{out}");
    let ids = stdout(&quakelens(&[
        "sql",
        "--lake",
        &lake,
        "--format",
        "csv",
        "SELECT window_id FROM waveform_shap ORDER BY window_id LIMIT 1",
    ]));
    let window_id = ids.lines().nth(1).unwrap().trim();
    let figure = path("waveform.png");
    quakelens(&[
        "plot",
        "waveform",
        "--lake",
        &lake,
        "--window-id",
        window_id,
        "--out",
        &figure,
    ]);
    let (w, h, colours) = decode_png(Path::new(&figure));
    assert!(
        w > 600 && h > 400 && colours > 3,
        "{w}x{h}, {colours} colours"
    );
    for (extra, wanted) in [
        (
            &["--target", "margin"][..],
            "the margin target needs a 2-class model",
        ),
        (
            &["--target", "top-class", "--masker", "inpaint"][..],
            "--masker inpaint is for spectrogram images",
        ),
        (&["--target", "top-class", "--bands", "5,70"][..], "Nyquist"),
    ] {
        let err = failing(&explain(extra));
        assert!(err.contains(wanted), "{extra:?}: {err}");
    }

    // The low-pass experiment: the model evaluated, then one trained per cutoff, each curve
    // drawn and tabled.
    let curve = path("lowpass.png");
    let lowpass = |extra: &[&str]| -> Vec<String> {
        [
            "experiment",
            "lowpass",
            "--lake",
            lake.as_str(),
            "--out",
            curve.as_str(),
        ]
        .iter()
        .chain(extra)
        .map(|a| a.to_string())
        .collect()
    };
    let out = stdout(&quakelens(&lowpass(&[
        "--classes",
        "4",
        "--mainshock",
        &mainshock,
        "--model",
        &model,
        "--cutoffs",
        "2,20",
    ])));
    assert!(
        out.contains("| 2 | ") && out.contains("| 20 | ") && out.contains("| none | "),
        "{out}"
    );
    let (w, h, colours) = decode_png(Path::new(&curve));
    assert!(
        w > 300 && h > 200 && colours > 3,
        "{w}x{h}, {colours} colours"
    );
    let table = json(&d.join("lowpass.json"));
    assert_eq!(table["mode"], "evaluated");
    let cuts = table["cutoffs"].as_array().unwrap();
    assert_eq!(cuts.len(), 2);
    assert_eq!(cuts[0]["metrics"]["n"], table["unfiltered"]["n"]);
    assert_eq!(cuts[1]["metrics"]["recall"].as_array().unwrap().len(), 4);
    let out = stdout(&quakelens(&lowpass(&[
        "--classes",
        "2",
        "--epochs",
        "1",
        "--cutoffs",
        "5",
        "--quiet",
    ])));
    assert!(
        out.contains("trained on 48 windows") && out.contains("| 5 | "),
        "{out}"
    );
    // The study's 2-D CNN in the same experiment: trained per cutoff on spectrograms
    // recomputed from the filtered samples, then a trained CNN2D evaluated on them.
    let out = stdout(&quakelens(&lowpass(&[
        "--arch",
        "cnn2d",
        "--classes",
        "2",
        "--epochs",
        "1",
        "--cutoffs",
        "5",
        "--quiet",
    ])));
    assert!(
        out.contains("Cnn2d, 2 classes, trained on 48 windows") && out.contains("| 5 | "),
        "{out}"
    );
    let cnn = path("models/cnn.safetensors");
    quakelens(&[
        "train", "cnn", "--lake", &lake, "--out", &cnn, "--epochs", "1", "--quiet",
    ]);
    let out = stdout(&quakelens(&lowpass(&[
        "--arch",
        "cnn2d",
        "--classes",
        "2",
        "--model",
        &cnn,
        "--cutoffs",
        "2,20",
    ])));
    assert!(
        out.contains("Cnn2d, 2 classes, evaluated") && out.contains("| 20 | "),
        "{out}"
    );
    let table = json(&d.join("lowpass.json"));
    assert_eq!(table["arch"], "cnn2d");
    assert_eq!(
        table["cutoffs"][1]["metrics"]["recall"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let err = failing(&lowpass(&[
        "--arch",
        "cnn2d",
        "--classes",
        "4",
        "--mainshock",
        &mainshock,
    ]));
    assert!(
        err.contains("the study's 2-D CNN separates 2 classes, not 4"),
        "{err}"
    );
    let err = failing(&lowpass(&["--classes", "2", "--model", &model]));
    assert!(err.contains("the model's classes (pre_early"), "{err}");
    let err = failing(&lowpass(&["--cutoffs", "60"]));
    assert!(
        err.contains("below the Nyquist frequency 50 Hz (got 60 Hz)"),
        "{err}"
    );

    // So does a run that cuts windows with their samples, in the same pass.
    let scored = path("scored");
    let out = stdout(&quakelens(&[
        "run",
        "--synthetic",
        "4",
        "--synthetic-dir",
        &path("syn4"),
        "--lake",
        &scored,
        "--waveforms",
        "--cnn",
        &model,
    ]));
    assert_eq!(
        sql_count(
            &scored,
            "SELECT count(*) FROM scores s JOIN windows w ON s.window_id = w.window_id \
             WHERE s.model_kind = 'quakelens-conv1d' AND cardinality(w.waveform) = 7500"
        ),
        4,
        "{out}"
    );

    // Bad labels, and a lake without waveforms, are clear errors.
    let err = failing(&[
        "train",
        "conv1d",
        "--lake",
        &lake,
        "--classes",
        "9",
        "--mainshock",
        &mainshock,
    ]);
    assert!(
        err.contains("9 classes need the intermediate sequence (--middle"),
        "{err}"
    );
    let err = failing(&["train", "conv1d", "--lake", &lake, "--classes", "4"]);
    assert!(
        err.contains("no events before the mainshock 2016-10-30T07:40:17"),
        "{err}"
    );
    let err = failing(&["train", "conv1d", "--lake", &lake, "--mainshock", "tuesday"]);
    assert!(
        err.contains("--mainshock \"tuesday\" is not a UTC time"),
        "{err}"
    );
    quakelens(&[
        "run",
        "--synthetic",
        "4",
        "--synthetic-dir",
        &path("syn4"),
        "--lake",
        &plain,
    ]);
    let err = failing(&["train", "conv1d", "--lake", &plain]);
    assert!(
        err.contains("stores no waveforms") && err.contains("run --waveforms"),
        "{err}"
    );
    let err = failing(&["score", "--lake", &plain, "--cnn", &model]);
    assert!(
        err.contains("reads waveforms of [3, 2500], these windows carry none")
            && err.contains("--waveforms"),
        "{err}"
    );
    let err = failing(&[
        "run",
        "--synthetic",
        "4",
        "--synthetic-dir",
        &path("syn4"),
        "--lake",
        &plain,
        "--waveforms",
    ]);
    assert!(
        err.contains("holds waveforms of shape none, this writer makes 3,2500"),
        "{err}"
    );
}

/// The paper's finding on the synthetic sequence, end to end: the classes differ above the
/// corner frequencies, so the 2-D CNN trained on the unfiltered or 30 Hz low-passed windows
/// separates them and the one trained below 10 Hz falls toward chance. Fixed seeds; the margins
/// leave room for libtorch's threaded rounding.
#[test]
fn the_low_pass_curve_falls_where_the_sequence_separates_its_classes() {
    let dir = tempfile::tempdir().unwrap();
    let path = |p: &str| dir.path().join(p).display().to_string();
    let lake = path("lake");
    let out = stdout(&quakelens(&[
        "run",
        "--synthetic",
        "400",
        "--stations",
        "4",
        "--sequence",
        "--waveforms",
        "--synthetic-dir",
        &path("syn"),
        "--lake",
        &lake,
    ]));
    let mainshock = out
        .lines()
        .find_map(|l| {
            l.strip_prefix("sequence")?
                .trim()
                .strip_prefix("mainshock ")
        })
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no mainshock printed:\n{out}"))
        .to_string();
    let curve = path("lowpass.png");
    quakelens(&[
        "experiment",
        "lowpass",
        "--lake",
        &lake,
        "--arch",
        "cnn2d",
        "--classes",
        "2",
        "--mainshock",
        &mainshock,
        "--epochs",
        "8",
        "--cutoffs",
        "2,30",
        "--out",
        &curve,
        "--quiet",
    ]);
    let table = json(&dir.path().join("lowpass.json"));
    let recall = |m: &serde_json::Value| m["mean_recall"].as_f64().unwrap();
    let none = recall(&table["unfiltered"]);
    let (two, thirty) = (
        recall(&table["cutoffs"][0]["metrics"]),
        recall(&table["cutoffs"][1]["metrics"]),
    );
    assert!(none >= 0.7, "unfiltered test recall {none}");
    assert!(two <= none - 0.1, "2 Hz {two} vs unfiltered {none}");
    assert!(thirty >= two + 0.1, "30 Hz {thirty} vs 2 Hz {two}");
}
