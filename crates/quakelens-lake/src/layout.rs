//! Where tables live and the manifest that keeps a lake's files compatible.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::schema::SCHEMA_VERSION;

/// The tables of a lake, in the order they are registered.
pub const TABLES: [&str; 6] = [
    "windows",
    "features",
    "scores",
    "magnitudes",
    "forest_shap",
    "cnn_shap",
];

#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{path}: {reason}")]
    Manifest { path: String, reason: String },
    #[error("lake {path} holds schema v{found} with spectrogram shape {found_shape:?}, this write is v{want} with {want_shape:?}; use another --lake")]
    Incompatible {
        path: String,
        found: u32,
        found_shape: [usize; 3],
        want: u32,
        want_shape: [usize; 3],
    },
    #[error("building the {table} batch: {reason}")]
    Batch { table: String, reason: String },
    #[error("writing {path}: {reason}")]
    Parquet { path: String, reason: String },
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LakeError + '_ {
    move |error| LakeError::Io {
        path: path.display().to_string(),
        error,
    }
}

/// `lake.json`: what every file in the lake agrees on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LakeManifest {
    pub schema_version: u32,
    pub spectrogram_shape: [usize; 3],
}

impl LakeManifest {
    pub fn new(spectrogram_shape: [usize; 3]) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            spectrogram_shape,
        }
    }

    pub fn path(root: &Path) -> PathBuf {
        root.join("lake.json")
    }

    /// Reads the manifest, `None` for a lake that has not been written yet.
    pub fn load(root: &Path) -> Result<Option<Self>, LakeError> {
        let path = Self::path(root);
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| LakeError::Manifest {
                path: path.display().to_string(),
                reason: e.to_string(),
            })
    }

    /// Creates the manifest, or checks that an existing lake matches it.
    pub fn ensure(&self, root: &Path) -> Result<(), LakeError> {
        match Self::load(root)? {
            Some(found) if &found == self => Ok(()),
            Some(found) => Err(LakeError::Incompatible {
                path: root.display().to_string(),
                found: found.schema_version,
                found_shape: found.spectrogram_shape,
                want: self.schema_version,
                want_shape: self.spectrogram_shape,
            }),
            None => {
                std::fs::create_dir_all(root).map_err(io_err(root))?;
                let text = serde_json::to_string_pretty(self).map_err(|e| LakeError::Manifest {
                    path: root.display().to_string(),
                    reason: e.to_string(),
                })?;
                crate::writer::write_atomically(&Self::path(root), text.as_bytes())
            }
        }
    }
}
