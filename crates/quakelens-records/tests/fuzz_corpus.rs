//! The message fuzzer's corpus and every input that once crashed it (`fuzz/`), replayed through
//! the same call as the fuzz target on every test run: a decoder may refuse, never panic.

use std::path::{Path, PathBuf};

use quakelens_records::messages::{decode_with_every_decoder, fixtures::seed_messages};

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
fn message_corpus_and_regressions_decode_without_panicking() {
    let mut files = inputs("corpus/messages");
    // Inputs that once crashed or hung the fuzzer, when there are any.
    let regressions = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions/messages");
    if regressions.is_dir() {
        files.extend(inputs("regressions/messages"));
    }
    assert!(files.len() >= 8, "{} inputs", files.len());
    let accepted = files
        .iter()
        .filter(|p| decode_with_every_decoder(&std::fs::read(p).unwrap()) > 0)
        .count();
    eprintln!("{} inputs, {accepted} accepted by a decoder", files.len());
    // The corpus keeps valid messages too, so the decoders' happy paths stay covered.
    assert!(accepted >= 8, "{accepted} of {} accepted", files.len());
}

/// Every seed is accepted by exactly one decoder (its own), and each is in the corpus, so the
/// fuzzer starts from a valid message of every kind.
#[test]
fn every_seed_is_one_kind_and_is_in_the_corpus() {
    let corpus: Vec<Vec<u8>> = inputs("corpus/messages")
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    for (kind, bytes) in seed_messages() {
        assert_eq!(decode_with_every_decoder(&bytes), 1, "{kind}");
        assert!(
            corpus.contains(&bytes),
            "the {kind} seed is not in fuzz/corpus/messages"
        );
    }
}
