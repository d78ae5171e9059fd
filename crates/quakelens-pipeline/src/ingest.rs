//! Input files: which files under the paths a run or an ingest is given are miniSEED.

use std::path::{Path, PathBuf};

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
