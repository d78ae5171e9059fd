//! Ingest stage: find input files and decode them (in parallel), keeping every warning.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use quakelens_signal::miniseed::{read_file, DecodeWarning, Trace};

/// File endings taken from directories; files named explicitly are always tried.
const MINISEED_EXTENSIONS: [&str; 5] = ["mseed", "miniseed", "ms", "seed", "msd"];

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("input {path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("no miniSEED files under {0} (looked for *.{{{exts}}})", exts = MINISEED_EXTENSIONS.join(","))]
    Empty(String),
}

/// Expands files and directories (recursively, sorted) into the files to decode.
pub fn collect_inputs(paths: &[PathBuf]) -> Result<Vec<PathBuf>, IngestError> {
    let mut files = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|error| IngestError::Io {
            path: path.display().to_string(),
            error,
        })?;
        if meta.is_dir() {
            let before = files.len();
            walk(path, &mut files)?;
            if files.len() == before {
                return Err(IngestError::Empty(path.display().to_string()));
            }
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), IngestError> {
    let io = |error| IngestError::Io {
        path: dir.display().to_string(),
        error,
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io)?;
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(&path, out)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| MINISEED_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        {
            out.push(path);
        }
    }
    Ok(())
}

/// Decoded input: all traces, plus what went wrong where.
#[derive(Debug, Default)]
pub struct Ingested {
    pub traces: Vec<Trace>,
    pub records: usize,
    pub warnings: Vec<DecodeWarning>,
    /// Files that held no usable record at all, with the reason.
    pub failed_files: Vec<String>,
}

/// Decodes `files` in parallel; a bad file is reported, never fatal to the others.
pub fn decode_files(files: &[PathBuf], on_file: impl Fn() + Sync) -> Ingested {
    let results: Vec<_> = files
        .par_iter()
        .map(|f| {
            let r = read_file(f);
            on_file();
            r
        })
        .collect();
    let mut out = Ingested::default();
    for result in results {
        match result {
            Ok(decoded) => {
                out.records += decoded.records;
                out.warnings.extend(decoded.warnings);
                out.traces.extend(decoded.traces);
            }
            Err(e) => out.failed_files.push(e.to_string()),
        }
    }
    out
}
