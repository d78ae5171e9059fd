//! miniSEED decoding agrees with what ObsPy reads from the real recordings
//! (`MANIFEST.obspy.json`), and corrupt files give located errors, never a panic or a hang.

mod common;

use std::time::Duration;

use quakelens_signal::miniseed::read_file;
use quakelens_signal::time::format_ns;
use serde_json::Value;

fn manifest() -> serde_json::Map<String, Value> {
    let text = std::fs::read_to_string(common::real_data().join("MANIFEST.obspy.json")).unwrap();
    serde_json::from_str::<Value>(&text)
        .unwrap()
        .as_object()
        .unwrap()
        .clone()
}

fn file_of(key: &str) -> std::path::PathBuf {
    common::real_data().join(key.trim_start_matches("shared/data/real/"))
}

#[test]
fn every_file_decodes_like_obspy() {
    let mut checked = 0;
    for (key, expected) in manifest() {
        let Some(traces) = expected.as_array() else {
            continue;
        };
        let path = file_of(&key);
        let decoded = read_file(&path).unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_eq!(decoded.traces.len(), traces.len(), "{key}: trace count");
        for (ours, want) in decoded.traces.iter().zip(traces) {
            let ctx = format!("{key} {}", want["id"]);
            assert_eq!(ours.id.to_string(), want["id"].as_str().unwrap(), "{ctx}");
            assert_eq!(
                format_ns(ours.start_ns),
                want["start"].as_str().unwrap(),
                "{ctx}"
            );
            assert_eq!(
                ours.sample_rate,
                want["sampling_rate"].as_f64().unwrap(),
                "{ctx}"
            );
            assert_eq!(
                ours.samples.len() as u64,
                want["npts"].as_u64().unwrap(),
                "{ctx}"
            );
            let sum: f64 = ours.samples.iter().sum();
            let want_sum = want["sum"].as_f64().unwrap();
            assert!(
                (sum - want_sum).abs() <= 1e-9 * want_sum.abs().max(1.0),
                "{ctx}: sum {sum} vs {want_sum}"
            );
            for (i, f) in want["first"].as_array().unwrap().iter().enumerate() {
                assert_eq!(ours.samples[i], f.as_f64().unwrap(), "{ctx}: sample {i}");
            }
            checked += 1;
        }
    }
    // 12 good/recoverable files hold 20 traces; the manifest lists every one.
    assert!(checked >= 20, "only {checked} traces checked");
}

/// The manifest is what ObsPy read once; here ObsPy itself reads every file the manifest says
/// it can, and every sample must be the same.
#[test]
fn every_file_decodes_to_what_obspy_itself_reads() {
    let Some(py) = common::python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut files = 0;
    let mut samples = 0;
    for (key, expected) in manifest() {
        if expected.as_array().is_none() {
            continue;
        }
        let path = file_of(&key);
        let out = dir.path().join("obspy.json");
        quakelens_signal::reference::run(
            &py,
            dir.path(),
            "obspy-read",
            &[path.display().to_string(), out.display().to_string()],
        )
        .unwrap_or_else(|e| panic!("{key}: ObsPy: {e}"));
        let meta: Vec<Value> =
            serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        let want =
            quakelens_signal::reference::read_f64(&dir.path().join("obspy.json.f64")).unwrap();
        let decoded = read_file(&path).unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_eq!(decoded.traces.len(), meta.len(), "{key}: trace count");
        let mut ours = Vec::new();
        for (t, m) in decoded.traces.iter().zip(&meta) {
            assert_eq!(t.id.to_string(), m["id"].as_str().unwrap(), "{key}");
            assert_eq!(
                t.start_ns,
                m["start_ns"].as_i64().unwrap(),
                "{key} {}",
                m["id"]
            );
            assert_eq!(t.sample_rate, m["sampling_rate"].as_f64().unwrap(), "{key}");
            assert_eq!(t.samples.len() as u64, m["npts"].as_u64().unwrap(), "{key}");
            ours.extend_from_slice(&t.samples);
        }
        let err = quakelens_signal::reference::compare::max_abs_diff(&ours, &want);
        assert_eq!(
            err, 0.0,
            "{key}: samples differ from ObsPy's by up to {err}"
        );
        files += 1;
        samples += ours.len();
    }
    eprintln!("{files} files, {samples} samples: identical to ObsPy's");
    assert!(files >= 12, "only {files} files read");
}

#[test]
fn corrupt_files_give_located_errors_without_hanging() {
    for (key, expected) in manifest() {
        if !key.contains("/bad/") {
            continue;
        }
        let path = file_of(&key);
        let name = path.display().to_string();
        // On a thread with a generous deadline: a decoder that loops fails here, not by hanging.
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        std::thread::spawn(move || {
            let _ = tx.send(read_file(&p));
        });
        let result = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("{key}: decoding did not end"));
        match (result, expected.as_array()) {
            (Ok(decoded), Some(traces)) => {
                // ObsPy recovers these traces: so must we.
                assert_eq!(decoded.traces.len(), traces.len(), "{key}");
                for (ours, want) in decoded.traces.iter().zip(traces) {
                    assert_eq!(
                        ours.samples.len() as u64,
                        want["npts"].as_u64().unwrap(),
                        "{key}"
                    );
                }
                for w in &decoded.warnings {
                    let text = w.to_string();
                    assert!(text.contains(&name) && text.contains("@ byte"), "{text}");
                }
            }
            (Ok(decoded), None) => {
                // ObsPy gives up on the whole file; we may keep intact records but must say
                // where the damage is.
                assert!(!decoded.warnings.is_empty(), "{key}: damage not reported");
                let text = decoded.warnings[0].to_string();
                assert!(text.contains(&name) && text.contains("@ byte"), "{text}");
            }
            (Err(e), None) => {
                let text = e.to_string();
                assert!(text.contains(&name) && text.contains("byte"), "{text}");
            }
            (Err(e), Some(_)) => panic!("{key}: ObsPy recovers data but we failed: {e}"),
        }
    }
}

#[test]
fn truncated_file_reports_the_offset_of_the_cut() {
    let path = common::real_data().join("bad/truncated-record.mseed");
    let decoded = read_file(&path).unwrap();
    assert_eq!(decoded.records, 1);
    let w = &decoded.warnings[0];
    assert_eq!(w.offset, 512, "{w}");
    assert!(w.message.contains("truncated"), "{w}");
}

#[test]
fn missing_file_is_an_io_error_naming_it() {
    let err = read_file(std::path::Path::new("/nonexistent/x.mseed")).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/x.mseed"));
}

/// miniSEED 3 records (as libmseed packs them) decode too, integers and floats.
#[test]
fn decodes_miniseed3_records() {
    use mseed::{MSControlFlags, MSDataEncoding, PackInfo};
    for (encoding, values) in [
        (MSDataEncoding::Steim2, vec![1i32, -5, 70000, 3]),
        (MSDataEncoding::Integer32, vec![7, 8, 9, -2_000_000_000]),
    ] {
        let mut info = PackInfo::with_sample_rate("FDSN:XX_TEST_00_H_H_Z", 100.0).unwrap();
        info.format_version = 3;
        info.encoding = encoding;
        info.rec_len = 512;
        let start = time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let mut bytes = Vec::new();
        let mut data = values.clone();
        mseed::pack_raw(
            &mut data,
            &start,
            |r: &[u8]| bytes.extend_from_slice(r),
            &info,
            MSControlFlags::MSF_FLUSHDATA,
        )
        .unwrap();
        assert_eq!(bytes[..2], *b"MS", "a miniSEED 3 record");
        let decoded = quakelens_signal::miniseed::decode_bytes(&bytes, "v3").unwrap();
        let t = &decoded.traces[0];
        assert_eq!(t.id.to_string(), "XX.TEST.00.HHZ");
        assert_eq!(t.start_ns, 1_700_000_000_000_000_000);
        assert_eq!(
            t.samples,
            values.iter().map(|&v| v as f64).collect::<Vec<_>>()
        );
    }
}

/// Records whose Steim integrity check fails are refused, with libmseed's reason and the offset;
/// a file of nothing else is an error (ObsPy refuses these files too).
#[test]
fn steim_integrity_failures_are_refused_with_the_reason() {
    for name in [
        "bad/infinite-loop.mseed",
        "bad/invalid-blockette-offset.mseed",
    ] {
        let err = read_file(&common::real_data().join(name))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(name) && err.contains("byte 0") && err.contains("integrity check"),
            "{err}"
        );
    }
    let decoded =
        read_file(&common::real_data().join("bad/wrong-blockette-numbers.mseed")).unwrap();
    assert!(
        decoded
            .warnings
            .iter()
            .any(|w| w.message.contains("Number of blockettes")),
        "{:?}",
        decoded.warnings
    );
}
