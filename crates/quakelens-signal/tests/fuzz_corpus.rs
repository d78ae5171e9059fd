//! The fuzzers' corpus and every input that once crashed them (`fuzz/`), replayed through the
//! same calls as the fuzz targets on every test run: decoding may refuse, never panic.

use std::path::{Path, PathBuf};

use quakelens_signal::miniseed::{decode_bytes, decode_record_logged, split_records, Frame};

fn inputs(dir: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz")
        .join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn fuzz_corpus_and_regressions_decode_without_panicking() {
    let mut files = inputs("corpus/miniseed_file");
    files.extend(inputs("corpus/miniseed_record"));
    files.extend(inputs("regressions"));
    assert!(files.len() > 10, "{} inputs", files.len());
    let (mut decoded, mut records) = (0, 0);
    for path in &files {
        let data = std::fs::read(path).unwrap();
        if decode_bytes(&data, &path.display().to_string()).is_ok() {
            decoded += 1;
        }
        for frame in split_records(&data) {
            if let Frame::Record { offset, len } = frame {
                records += decode_record_logged(&data[offset..offset + len]).0.is_ok() as usize;
            }
        }
    }
    eprintln!(
        "{} inputs: {decoded} decode as files, {records} records decode",
        files.len()
    );
    // The corpus keeps valid data too, so the decoders' happy paths stay covered.
    assert!(decoded > 0 && records > 0);
}
