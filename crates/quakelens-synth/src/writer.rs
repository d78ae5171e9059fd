//! Writes synthetic recordings as standard miniSEED 2 (Steim-2, 4096-byte records) plus the
//! catalogue, so every consumer reads them exactly like real data.

use std::path::{Path, PathBuf};

use mseed::{MSControlFlags, MSDataEncoding, PackInfo};

use crate::catalog::{write_catalog, CatalogError};
use crate::generator::Synthetic;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{path}: libmseed could not pack the data: {reason}")]
    Pack { path: String, reason: String },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

/// Paths of a written dataset.
#[derive(Clone, Debug)]
pub struct WrittenDataset {
    pub files: Vec<PathBuf>,
    pub catalog: PathBuf,
}

/// Writes one file per channel (`NET.STA.LOC.CHA.mseed`) and `catalog.csv` into `dir`.
pub fn write_dataset(dir: &Path, data: &Synthetic) -> Result<WrittenDataset, WriteError> {
    write_dataset_records(dir, data, 4096, Encoding::Steim2)
}

/// How samples are encoded in the records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// Compressed (what archives hold): a 4096-byte record carries minutes of quiet data.
    Steim2,
    /// Uncompressed 32-bit integers: a record's time span is fixed by its length (a 256-byte
    /// record holds 50 samples, 0.5 s at 100 Hz), like a low-latency real-time feed.
    Int32,
}

/// [`write_dataset`] with `record_length`-byte records (a power of two, 256 to 65536) in
/// `encoding`.
pub fn write_dataset_records(
    dir: &Path,
    data: &Synthetic,
    record_length: i32,
    encoding: Encoding,
) -> Result<WrittenDataset, WriteError> {
    std::fs::create_dir_all(dir).map_err(|error| WriteError::Io {
        path: dir.display().to_string(),
        error,
    })?;
    let mut files = Vec::new();
    for rec in &data.stations {
        for (comp, samples) in ['N', 'E', 'Z'].iter().zip(&rec.channels) {
            let k = &rec.key;
            let cha = format!("{}{comp}", k.band);
            let path = dir.join(format!(
                "{}.{}.{}.{cha}.mseed",
                k.network, k.station, k.location
            ));
            let sid = format!(
                "FDSN:{}_{}_{}_{}",
                k.network,
                k.station,
                k.location,
                cha.chars().map(String::from).collect::<Vec<_>>().join("_")
            );
            let bytes = pack_channel(&sid, rec.start_ns, samples, record_length, encoding)
                .map_err(|reason| WriteError::Pack {
                    path: path.display().to_string(),
                    reason,
                })?;
            std::fs::write(&path, bytes).map_err(|error| WriteError::Io {
                path: path.display().to_string(),
                error,
            })?;
            files.push(path);
        }
    }
    let catalog = dir.join("catalog.csv");
    write_catalog(&catalog, &data.catalog)?;
    Ok(WrittenDataset { files, catalog })
}

/// One channel's 100 Hz `samples` from `start_ns` as miniSEED 2 records of `rec_len` bytes
/// (`sid` is an FDSN source id, e.g. `FDSN:XX_STA__H_H_Z`): a feed made in memory.
pub fn pack_channel(
    sid: &str,
    start_ns: i64,
    samples: &[i32],
    rec_len: i32,
    encoding: Encoding,
) -> Result<Vec<u8>, String> {
    let mut info = PackInfo::with_sample_rate(sid, 100.0).map_err(|e| e.to_string())?;
    info.format_version = 2;
    info.encoding = match encoding {
        Encoding::Steim2 => MSDataEncoding::Steim2,
        Encoding::Int32 => MSDataEncoding::Integer32,
    };
    info.rec_len = rec_len;
    let start = time::OffsetDateTime::from_unix_timestamp_nanos(start_ns as i128)
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut data = samples.to_vec();
    mseed::pack_raw(
        &mut data,
        &start,
        |rec: &[u8]| out.extend_from_slice(rec),
        &info,
        MSControlFlags::MSF_FLUSHDATA | MSControlFlags::MSF_PACKVER2,
    )
    .map_err(|e| e.to_string())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::{generate, SynthConfig};
    use quakelens_signal::miniseed::read_file;

    #[test]
    fn written_files_decode_to_the_generated_samples() {
        let data = generate(&SynthConfig {
            events: 2,
            stations: 1,
            ..SynthConfig::default()
        });
        for (len, encoding) in [(4096, Encoding::Steim2), (256, Encoding::Int32)] {
            let dir = tempfile::tempdir().unwrap();
            let written = write_dataset_records(dir.path(), &data, len, encoding).unwrap();
            assert_eq!(written.files.len(), 3);
            for (file, samples) in written.files.iter().zip(&data.stations[0].channels) {
                let decoded = read_file(file).unwrap();
                assert!(decoded.warnings.is_empty(), "{:?}", decoded.warnings);
                assert_eq!(decoded.traces.len(), 1);
                let t = &decoded.traces[0];
                assert_eq!(t.start_ns, data.stations[0].start_ns);
                assert_eq!(t.sample_rate, 100.0);
                let want: Vec<f64> = samples.iter().map(|&v| v as f64).collect();
                assert_eq!(t.samples, want);
                if encoding == Encoding::Int32 {
                    // 50 samples (0.5 s) a record.
                    let bytes = std::fs::metadata(file).unwrap().len() as usize;
                    assert_eq!(bytes / 256, samples.len().div_ceil(50));
                }
            }
            assert!(written.files[2].ends_with("XX.SYN00.00.HHZ.mseed"));
        }
    }
}
