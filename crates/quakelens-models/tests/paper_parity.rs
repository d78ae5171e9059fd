//! The paper's model and labels against the reference tools themselves: PyTorch (the 1-D CNN,
//! its state_dicts and TorchScript), a reference implementation of the time-to-failure rules,
//! and scikit-learn's multi-class metrics.

use std::collections::HashMap;
use std::path::Path;

use quakelens_models::conv1d::{
    import_state_dict, save_conv1d, Conv1dNet, WaveformModel, WAVEFORM_LEN,
};
use quakelens_models::dataset::Split;
use quakelens_models::metrics::MulticlassMetrics;
use quakelens_models::reference;
use quakelens_models::ttf::{paper_split, ClassCount, EventSplit, EventTime, TtfScheme};
use quakelens_signal::reference::compare::max_abs_diff;
use quakelens_signal::reference::{python_for_tests, read_f64, write_f64};
use tch::nn::{ModuleT, VarStore};
use tch::{Device, Kind, Tensor};

fn s(v: impl ToString) -> String {
    v.to_string()
}

fn f32s(path: &Path) -> Vec<f32> {
    read_f64(path).unwrap().iter().map(|&v| v as f32).collect()
}

fn logits_of(model: &WaveformModel, x: &[f32], n: usize) -> Vec<f64> {
    model
        .logits(x, n)
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect()
}

fn assert_close(what: &str, got: &[f64], want: &[f64]) {
    let err = max_abs_diff(got, want);
    eprintln!("{what}: {} logits, max |diff| {err:.3e}", want.len());
    assert!(err <= 1e-5, "{what}: max |ours - PyTorch| = {err}");
}

#[test]
fn the_papers_state_dicts_and_torchscript_score_like_pytorch() {
    let Some(py) = python_for_tests() else { return };
    for classes in [2usize, 4, 9] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let n = 5;
        reference::run(
            &py,
            d,
            "conv1d",
            &[d.display().to_string(), s(n), s(classes), s(20 + classes)],
        )
        .unwrap();
        let x = f32s(&d.join("x.f64"));
        let want = read_f64(&d.join("logits.f64")).unwrap();
        assert_eq!(want.len(), n * classes);

        for file in [
            "state.pt",
            "state_double.pt",
            "state_views.pt",
            "state.safetensors",
        ] {
            let (vs, net, names) = import_state_dict(&d.join(file), Device::Cpu)
                .unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(names.len(), classes);
            let out = d.join(format!("{file}.quakelens"));
            let hash = save_conv1d(&vs, &names, None, &out).unwrap();
            let model = WaveformModel::load(&out, Device::Cpu).unwrap();
            assert_eq!(model.hash, hash);
            assert_eq!(model.classes, names);
            assert_close(
                &format!("{classes} classes, {file}"),
                &logits_of(&model, &x, n),
                &want,
            );
            // The trainable network in eval mode agrees too (no folding).
            let _g = tch::no_grad_guard();
            let xs = Tensor::from_slice(&x).view([n as i64, 3, 2500]);
            let eval: Vec<f64> = Vec::<f32>::try_from(net.forward_t(&xs, false).flatten(0, -1))
                .unwrap()
                .into_iter()
                .map(f64::from)
                .collect();
            assert_close(
                &format!("{classes} classes, {file}, eval mode"),
                &eval,
                &want,
            );
        }
        for (file, says) in [
            ("module.pt", "not a state_dict"),
            ("checkpoint.pt", "checkpoint"),
        ] {
            let err = import_state_dict(&d.join(file), Device::Cpu)
                .err()
                .unwrap_or_else(|| panic!("{file} imported"))
                .to_string();
            assert!(err.contains(file) && err.contains(says), "{err}");
        }
        let scripted = WaveformModel::load(&d.join("scripted.pt"), Device::Cpu).unwrap();
        assert_eq!(scripted.kind.name(), "torchscript");
        assert_eq!(scripted.classes.len(), classes);
        assert_close(
            &format!("{classes} classes, TorchScript"),
            &logits_of(&scripted, &x, n),
            &want,
        );
    }
}

#[test]
fn our_conv1d_file_is_read_by_pytorch_with_the_same_outputs() {
    let Some(py) = python_for_tests() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tch::manual_seed(9);
    let vs = VarStore::new(Device::Cpu);
    let net = Conv1dNet::new(&vs.root(), 4);
    // Batch-norm statistics as after training.
    let warm = Tensor::randn([8, 3, 2500], (Kind::Float, Device::Cpu)) * 300.0;
    for _ in 0..3 {
        let _ = net.forward_t(&warm, true);
    }
    let names = ClassCount::Four.names();
    let path = d.join("conv1d.safetensors");
    save_conv1d(&vs, &names, None, &path).unwrap();
    let n = 4;
    let x: Vec<f64> = (0..n * WAVEFORM_LEN)
        .map(|i| ((i * 7919 % 1013) as f64 - 506.0) * (1 + i / WAVEFORM_LEN) as f64)
        .collect();
    write_f64(&d.join("x.f64"), &x).unwrap();
    let p = |f: &str| d.join(f).display().to_string();
    reference::run(
        &py,
        d,
        "conv1d-logits",
        &[p("conv1d.safetensors"), p("x.f64"), s(n), p("out.f64")],
    )
    .unwrap();
    let model = WaveformModel::load(&path, Device::Cpu).unwrap();
    let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    assert_close(
        "our CONV1D file",
        &logits_of(&model, &x32, n),
        &read_f64(&d.join("out.f64")).unwrap(),
    );
    // Softmax classes in batches of uneven size.
    let windows: Vec<&[f32]> = x32.chunks(WAVEFORM_LEN).collect();
    let classified = model.classify(&windows, 3).unwrap();
    assert_eq!(classified.len(), n);
    for (best, p) in classified {
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert!(p.iter().all(|&v| v <= p[best]));
    }
}

#[test]
fn state_dicts_of_another_shape_are_refused_naming_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let vs = VarStore::new(Device::Cpu);
    let _ = Conv1dNet::new(&vs.root(), 4);
    let good = || -> Vec<(String, Tensor)> { vs.variables().into_iter().collect() };
    let write = |name: &str, tensors: &[(String, Tensor)]| {
        let path = d.join(name);
        Tensor::write_safetensors(tensors, &path).unwrap();
        let Err(err) = import_state_dict(&path, Device::Cpu) else {
            panic!("{name} imported")
        };
        let err = err.to_string();
        assert!(err.contains(name), "names the file: {err}");
        err
    };
    let mut reshaped = good();
    for (name, t) in reshaped.iter_mut() {
        if name == "conv2.weight" {
            *t = Tensor::zeros([64, 32, 5], (Kind::Float, Device::Cpu));
        }
    }
    let err = write("reshaped.safetensors", &reshaped);
    assert!(
        err.contains("conv2.weight") && err.contains("[64, 32, 7]"),
        "{err}"
    );

    let mut extra = good();
    extra.push((
        "fc9.weight".into(),
        Tensor::zeros([2], (Kind::Float, Device::Cpu)),
    ));
    let err = write("extra.safetensors", &extra);
    assert!(err.contains("fc9.weight"), "{err}");

    let missing: Vec<_> = good()
        .into_iter()
        .filter(|(n, _)| n != "BatchNorm3.running_var")
        .collect();
    let err = write("missing.safetensors", &missing);
    assert!(
        err.contains("BatchNorm3.running_var") && err.contains("missing"),
        "{err}"
    );

    let vs3 = VarStore::new(Device::Cpu);
    let _ = Conv1dNet::new(&vs3.root(), 3);
    let three: Vec<(String, Tensor)> = vs3.variables().into_iter().collect();
    let err = write("three.safetensors", &three);
    assert!(err.contains("2, 4 or 9"), "{err}");

    // A spectrogram CNN's file is not a waveform model, and the reverse.
    let path = d.join("conv1d.safetensors");
    save_conv1d(&vs, &ClassCount::Four.names(), None, &path).unwrap();
    let err = quakelens_models::cnn::CnnModel::load(&path, Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("CONV1D") && err.contains("score it as a waveform model"),
        "{err}"
    );
    let cnn2d = d.join("cnn2d.safetensors");
    let vs2 = VarStore::new(Device::Cpu);
    let _ = quakelens_models::cnn::Cnn2d::new(&vs2.root(), quakelens_models::cnn::INPUT_SHAPE);
    quakelens_models::cnn::save_cnn(
        &vs2,
        quakelens_models::cnn::INPUT_SHAPE,
        &Default::default(),
        None,
        &cnn2d,
    )
    .unwrap();
    let Err(err) = WaveformModel::load(&cnn2d, Device::Cpu) else {
        panic!("a CNN2D file loaded as a waveform model")
    };
    let err = err.to_string();
    assert!(
        err.contains("cnn2d.safetensors")
            && err.contains("\"CNN2D\"")
            && err.contains("CNN2D file is scored as one"),
        "{err}"
    );
}

/// A catalogue with known times: pre, a middle sequence, the mainshock itself, post; ties in
/// time, and more events before the mainshock than after.
fn catalogue() -> (Vec<EventTime>, i64, (i64, i64)) {
    let h = 3_600_000_000_000i64;
    let main = 1000 * h;
    let mut events = Vec::new();
    let mut push = |id: String, t: i64| events.push(EventTime { id, origin_ns: t });
    for i in 0..157 {
        // i and i + 150 share an origin time.
        push(format!("pre{i:03}"), (i * 37 % 150) * h);
    }
    for i in 0..23 {
        push(format!("mid{i:02}"), 700 * h + i * h / 2);
    }
    push("main".into(), main);
    for i in 0..141 {
        push(format!("post{i:03}"), main + (1 + i * 13 % 400) * h);
    }
    // The same event seen at a second station.
    push("post007".into(), main + (1 + 91) * h); // post007's time: 1 + 7·13 mod 400 hours
    (events, main, (690 * h, 720 * h))
}

#[test]
fn time_to_failure_classes_and_splits_equal_the_reference_rules() {
    let Some(py) = python_for_tests() else { return };
    let (events, main, middle) = catalogue();
    for (classes, seed) in [
        (ClassCount::Two, 3u64),
        (ClassCount::Four, 4),
        (ClassCount::Nine, 5),
    ] {
        let scheme = TtfScheme {
            classes,
            mainshock_ns: main,
            middle: (classes == ClassCount::Nine).then_some(middle),
            seed,
        };
        let labels = scheme.assign(&events).unwrap();
        let plan = paper_split(seed);
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let spec = serde_json::json!({
            "events": events.iter().map(|e| (e.id.clone(), e.origin_ns)).collect::<Vec<_>>(),
            "classes": classes.count(),
            "mainshock_ns": main,
            "middle": scheme.middle.map(|(a, b)| [a, b]),
            "seed": seed,
            "valid": plan.valid,
            "test": plan.test,
        });
        std::fs::write(d.join("in.json"), spec.to_string()).unwrap();
        let p = |f: &str| d.join(f).display().to_string();
        reference::run(&py, d, "ttf-labels", &[p("in.json"), p("out.json")]).unwrap();
        let want: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.join("out.json")).unwrap()).unwrap();
        let want_classes: HashMap<String, usize> =
            serde_json::from_value(want["classes"].clone()).unwrap();
        let got: HashMap<String, usize> = labels
            .events
            .iter()
            .map(|e| (e.id.clone(), e.class))
            .collect();
        assert_eq!(got, want_classes, "{classes:?}");
        assert_eq!(labels.at_mainshock, 1);
        // 157 pre, 23 in the middle (pre unless 9 classes give them their own), 141 post.
        let pre = if classes == ClassCount::Nine {
            157
        } else {
            157 + 23
        };
        assert_eq!(labels.left_out_by_balance, pre - 141);
        assert!(labels.counts.iter().all(|&c| c > 0), "{:?}", labels.counts);
        for (mode, key) in [
            (EventSplit::TimeOrdered, "time"),
            (EventSplit::Random, "random"),
        ] {
            let want: HashMap<String, String> = serde_json::from_value(want[key].clone()).unwrap();
            let got: HashMap<String, String> = labels
                .split(mode, &plan)
                .into_iter()
                .map(|(id, side)| {
                    let side = match side {
                        Split::Train => "train",
                        Split::Valid => "valid",
                        Split::Test => "test",
                    };
                    (id, side.to_string())
                })
                .collect();
            assert_eq!(got, want, "{classes:?} {key} split");
        }
        eprintln!(
            "{} classes: {:?} events per class, {} left out by balancing",
            classes.count(),
            labels.counts,
            labels.left_out_by_balance
        );
    }
}

#[test]
fn multiclass_metrics_equal_sklearn() {
    let Some(py) = python_for_tests() else { return };
    let k = 9;
    // Class 6 never occurs in the truth; predictions are right about half the time.
    let truth: Vec<usize> = (0..400).map(|i| [0, 1, 2, 3, 4, 5, 7, 8][i % 8]).collect();
    let pred: Vec<usize> = (0..400)
        .map(|i| if i % 3 == 0 { (i * 7) % k } else { truth[i] })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let as_f64 = |v: &[usize]| v.iter().map(|&c| c as f64).collect::<Vec<_>>();
    write_f64(&d.join("t.f64"), &as_f64(&truth)).unwrap();
    write_f64(&d.join("p.f64"), &as_f64(&pred)).unwrap();
    let p = |f: &str| d.join(f).display().to_string();
    reference::run(
        &py,
        d,
        "multiclass",
        &[p("t.f64"), p("p.f64"), s(k), p("m.json")],
    )
    .unwrap();
    let want: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("m.json")).unwrap()).unwrap();
    let m = MulticlassMetrics::from_labels(&ClassCount::Nine.names(), &truth, &pred);
    let bal = want["balanced_accuracy"].as_f64().unwrap();
    assert!(
        (m.mean_recall - bal).abs() < 1e-12,
        "{} vs {bal}",
        m.mean_recall
    );
    let norm: Vec<Vec<f64>> = serde_json::from_value(want["normalized"].clone()).unwrap();
    let flat = |m: &[Vec<f64>]| m.concat();
    assert!(max_abs_diff(&flat(&m.normalized), &flat(&norm)) < 1e-12);
}
