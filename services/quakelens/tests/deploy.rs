//! What `deploy/` and `k8s/` ship, checked with the real tools: promtool checks the scrape config
//! and rules and runs the rule unit tests; kubectl renders every overlay and kubernetes-validate
//! checks it against the Kubernetes schemas; a structural check covers what has no validator here
//! (Grafana provisioning, docker-compose, CRD objects); every metric named anywhere is one the
//! services export.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{promtool, root};
use quakelens_pipeline::metrics::FAMILIES;
use quakelens_transport::topics;

/// Runs a command, panicking with its output unless it succeeds.
fn succeeds(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

/// The ops venv's python (kubernetes-validate, PyYAML), from `.ci/setup-ops`.
fn ops_python() -> Option<PathBuf> {
    let found = std::env::var_os("QUAKELENS_OPS_VENV")
        .map(|v| PathBuf::from(v).join("bin/python"))
        .or_else(|| Some(root().join(".cache/ops/bin/python")))
        .filter(|p| p.is_file());
    if found.is_none() {
        quakelens_signal::reference::missing(
            "OPS_TOOLS",
            "the ops venv is required: run .ci/setup-ops",
        );
    }
    found
}

fn kubectl() -> Option<&'static str> {
    let found = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| "kubectl");
    if found.is_none() {
        quakelens_signal::reference::missing(
            "OPS_TOOLS",
            "kubectl is required to render the overlays",
        );
    }
    found
}

#[test]
fn prometheus_config_and_rules_pass_promtool_and_their_unit_tests() {
    let Some(promtool) = promtool() else {
        return;
    };
    let dir = root().join("deploy/prometheus");
    succeeds(
        Command::new(&promtool)
            .args(["check", "config", "prometheus.yml"])
            .current_dir(&dir),
        "promtool check config",
    );
    let out = succeeds(
        Command::new(&promtool)
            .args(["check", "rules", "rules/quakelens.rules.yml"])
            .current_dir(&dir),
        "promtool check rules",
    );
    assert!(out.contains("SUCCESS: 9 rules found"), "{out}");
    let out = succeeds(
        Command::new(&promtool)
            .args(["test", "rules", "tests/quakelens.rules.test.yml"])
            .current_dir(&dir),
        "promtool test rules",
    );
    assert!(out.contains("SUCCESS"), "{out}");
}

/// Every alert has a unit test that expects it to fire.
#[test]
fn every_alert_is_unit_tested() {
    let rules = std::fs::read_to_string(root().join("deploy/prometheus/rules/quakelens.rules.yml"))
        .unwrap();
    let tests =
        std::fs::read_to_string(root().join("deploy/prometheus/tests/quakelens.rules.test.yml"))
            .unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert_eq!(alerts.len(), 7, "{alerts:?}");
    for a in alerts {
        assert!(
            tests.contains(&format!(
                "alertname: {a}\n        exp_alerts:\n          - "
            )),
            "no test expects {a} to fire"
        );
    }
}

/// `quakelens_*` names in a text, with histogram suffixes taken off.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("quakelens_") {
        let start = i + at;
        let preceded =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b':');
        let end = text[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .map_or(text.len(), |n| start + n);
        let name = &text[start..end];
        // Recording-rule names (level:metric:operations) are checked through their expressions.
        if !preceded && !name.contains(':') {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            names.insert(base.to_string());
        }
        i = end;
    }
    names
}

#[test]
fn rules_and_dashboards_use_only_exported_metrics() {
    let known: BTreeSet<&str> = FAMILIES.iter().copied().collect();
    let mut files = vec![
        root().join("deploy/prometheus/rules/quakelens.rules.yml"),
        root().join("deploy/grafana/provisioning/alerting/quakelens-alerts.yml"),
    ];
    for e in std::fs::read_dir(root().join("deploy/grafana/dashboards")).unwrap() {
        files.push(e.unwrap().path());
    }
    let mut used = BTreeSet::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for name in metric_names(&text) {
            assert!(
                known.contains(name.as_str()),
                "{} uses {name}, which no service exports",
                f.display()
            );
            used.insert(name);
        }
    }
    // The operator's view covers the pipeline: most families are on a dashboard or in a rule.
    assert!(used.len() >= 19, "only {used:?}");
    assert_eq!(
        metric_names("rate(quakelens_window_latency_seconds_bucket[5m]) stage:quakelens_x:p99"),
        BTreeSet::from(["quakelens_window_latency_seconds".to_string()])
    );
}

fn render(overlay: &str, dir: &Path) -> PathBuf {
    let out = succeeds(
        Command::new(kubectl().unwrap())
            .args(["kustomize"])
            .arg(root().join("k8s/overlays").join(overlay)),
        &format!("kubectl kustomize {overlay}"),
    );
    let path = dir.join(format!("{overlay}.yaml"));
    std::fs::write(&path, out).unwrap();
    path
}

fn validate(python: &Path, manifest: &Path) -> std::process::Output {
    Command::new(python)
        .args([
            "-m",
            "kubernetes_validate",
            "--strict",
            "--quiet",
            "-k",
            "1.31.0",
        ])
        .arg(manifest)
        .output()
        .expect("kubernetes-validate starts")
}

#[test]
fn overlays_render_and_validate() {
    let (Some(_), Some(python)) = (kubectl(), ops_python()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let dev = render("dev", dir.path());
    let prod = render("prod", dir.path());
    let prod_s3 = render("prod-s3", dir.path());
    for manifest in [&dev, &prod, &prod_s3] {
        let out = validate(&python, manifest);
        assert!(
            out.status.success(),
            "kubernetes-validate {}:\n{}{}",
            manifest.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The S3 option: the lake writer and query read the bucket's Secret; no lake volume is left.
    let s3 = std::fs::read_to_string(&prod_s3).unwrap();
    assert!(
        !s3.contains("claimName: quakelens-lake\n"),
        "a lake volume is left"
    );
    assert!(!s3.contains("name: quakelens-lake\n  namespace: quakelens\nspec:\n  accessModes"));
    assert_eq!(
        s3.matches("name: quakelens-lake-s3").count(),
        3,
        "the Secret and two envFroms"
    );
    assert!(
        s3.contains("QUAKELENS_LAKE: czM6Ly9"),
        "QUAKELENS_LAKE=s3://… in the Secret"
    );
    assert!(s3.contains("- port: 443"));
    assert!(std::fs::read_to_string(&prod)
        .unwrap()
        .contains("claimName: quakelens-lake\n"));
    // The validator does reject a broken manifest (a number where a string belongs).
    let broken = dir.path().join("broken.yaml");
    let text = std::fs::read_to_string(&dev).unwrap();
    std::fs::write(
        &broken,
        text.replacen("claimName: quakelens-lake", "claimName: 7", 1),
    )
    .unwrap();
    assert!(!validate(&python, &broken).status.success());

    // The rest: Grafana, compose, CRD objects, policies.
    let topics: serde_json::Map<String, serde_json::Value> = topics::ALL
        .iter()
        .map(|(t, p)| (t.to_string(), (*p).into()))
        .collect();
    succeeds(
        Command::new(&python)
            .arg(root().join("deploy/tests/check_structure.py"))
            .arg(root())
            .args([&dev, &prod])
            .arg(serde_json::Value::Object(topics).to_string()),
        "deploy/tests/check_structure.py",
    );
}
