//! The CNN file: safetensors (readable by PyTorch's `safetensors` package or any JSON + bytes
//! reader) holding every parameter and buffer under PyTorch's names, as little-endian f32, with
//! `__metadata__`: `quakelens.format` = `quakelens-cnn`, `quakelens.format_version`,
//! `quakelens.arch` = `CNN2D`, `quakelens.input_shape` = `C,H,W`, `quakelens.input` (what the
//! spectrograms it takes are, e.g. `log` or the study's `log+png+norm(…)`: windows of another
//! input are refused), `quakelens.classes`, and `quakelens.training` (JSON: data, split, seed,
//! epochs, held-out metrics). Version 1 files (before `quakelens.input`) still load; their input
//! is unknown and not checked.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use quakelens_signal::spectrogram::SpectrogramInput;

use super::arch::{Cnn2d, CLASSES};
use super::CnnError;
use crate::hash::ModelHash;

pub const CNN_FORMAT: &str = "quakelens-cnn";
pub const CNN_FORMAT_VERSION: &str = "2";
pub const CNN_ARCH: &str = "CNN2D";

/// A loaded native model: its variables and what the file says about it.
pub struct NativeCnn {
    pub vs: VarStore,
    pub net: Cnn2d,
    pub metadata: HashMap<String, String>,
    /// The spectrograms it was trained on (`None` for version 1 files).
    pub input: Option<SpectrogramInput>,
    pub hash: ModelHash,
}

/// A model file that is not what it should be, with its path.
pub(crate) fn format_err(path: &Path, reason: impl Into<String>) -> CnnError {
    CnnError::Format {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

/// Writes `vs` (a [`Cnn2d`]'s variables) with metadata; returns the file's hash.
pub fn save_cnn(
    vs: &VarStore,
    shape: [i64; 3],
    input: &SpectrogramInput,
    training: Option<&serde_json::Value>,
    path: &Path,
) -> Result<ModelHash, CnnError> {
    write_model_file(
        vs,
        &[
            ("quakelens.arch", CNN_ARCH.to_string()),
            (
                "quakelens.input_shape",
                format!("{},{},{}", shape[0], shape[1], shape[2]),
            ),
            ("quakelens.input", input.to_string()),
            ("quakelens.classes", CLASSES.join(",")),
        ],
        training,
        path,
    )
}

/// Writes every variable of `vs` as little-endian f32 under its name, sorted, with the format,
/// its version, `described` and the training report as metadata; atomically. Returns the hash.
/// Shared by every network kept in this format (CNN2D, CONV1D).
pub(crate) fn write_model_file(
    vs: &VarStore,
    described: &[(&str, String)],
    training: Option<&serde_json::Value>,
    path: &Path,
) -> Result<ModelHash, CnnError> {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let mut blobs: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::with_capacity(named.len());
    for (name, t) in &named {
        let t = t
            .to_device(Device::Cpu)
            .to_kind(Kind::Float)
            .contiguous()
            .detach();
        let values = super::read_f32(&t, &format!("reading parameter {name}"))?;
        let shape = t.size().iter().map(|&d| d as usize).collect();
        blobs.push((
            name.clone(),
            shape,
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ));
    }
    let mut views = Vec::with_capacity(blobs.len());
    for (name, shape, bytes) in &blobs {
        let view = TensorView::new(Dtype::F32, shape.clone(), bytes)
            .map_err(|e| format_err(path, format!("{name}: {e:?}")))?;
        views.push((name.clone(), view));
    }
    let mut meta = HashMap::from([
        ("quakelens.format".to_string(), CNN_FORMAT.to_string()),
        (
            "quakelens.format_version".to_string(),
            CNN_FORMAT_VERSION.to_string(),
        ),
    ]);
    meta.extend(described.iter().map(|(k, v)| (k.to_string(), v.clone())));
    if let Some(t) = training {
        meta.insert("quakelens.training".to_string(), t.to_string());
    }
    let bytes = safetensors::tensor::serialize(views, &Some(meta))
        .map_err(|e| format_err(path, format!("serialising: {e:?}")))?;
    quakelens_lake::write_atomically(path, &bytes).map_err(|error| CnnError::Io {
        path: path.display().to_string(),
        error,
    })?;
    Ok(ModelHash::of(&bytes))
}

/// Reads a file written by [`save_cnn`], checking every tensor's name and shape.
pub fn load_cnn(path: &Path, bytes: &[u8], device: Device) -> Result<NativeCnn, CnnError> {
    let (_, header) =
        SafeTensors::read_metadata(bytes).map_err(|e| format_err(path, format!("{e:?}")))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let get = |key: &str| metadata.get(key).map(String::as_str).unwrap_or("");
    if get("quakelens.format") != CNN_FORMAT {
        return Err(format_err(
            path,
            format!(
                "not a {CNN_FORMAT} file (quakelens.format = {:?})",
                get("quakelens.format")
            ),
        ));
    }
    if get("quakelens.arch") == crate::conv1d::CONV1D_ARCH {
        return Err(format_err(
            path,
            "the paper's 1-D CNN on waveforms (arch CONV1D), not a spectrogram CNN: score it as a waveform model (`--cnn` of `score`/`run`/`serve scorer` takes either, on a lake made with --waveforms)",
        ));
    }
    let version = get("quakelens.format_version");
    if !matches!(version, "1" | CNN_FORMAT_VERSION) || get("quakelens.arch") != CNN_ARCH {
        return Err(format_err(
            path,
            format!(
                "format version {version:?} / arch {:?}; this build reads v1 and v{CNN_FORMAT_VERSION} {CNN_ARCH}",
                get("quakelens.arch")
            ),
        ));
    }
    let spectrogram = match version {
        "1" => None,
        _ => Some(
            get("quakelens.input")
                .parse::<SpectrogramInput>()
                .map_err(|e| format_err(path, format!("quakelens.input: {e}")))?,
        ),
    };
    let input = parse_shape(get("quakelens.input_shape"))
        .ok_or_else(|| format_err(path, "quakelens.input_shape must be C,H,W"))?;
    let tensors =
        SafeTensors::deserialize(bytes).map_err(|e| format_err(path, format!("{e:?}")))?;
    let vs = VarStore::new(device);
    let net = Cnn2d::new(&vs.root(), input);
    let expected = vs.variables();
    let stored = tensors.names().len();
    if stored != expected.len() {
        return Err(format_err(
            path,
            format!("{stored} tensors, {CNN_ARCH} has {}", expected.len()),
        ));
    }
    let _guard = tch::no_grad_guard();
    for (name, mut var) in expected {
        let view = tensors
            .tensor(&name)
            .map_err(|_| format_err(path, format!("tensor {name} is missing")))?;
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        if view.dtype() != Dtype::F32 || shape != var.size() {
            return Err(format_err(
                path,
                format!(
                    "{name}: {:?} {shape:?}, expected F32 {:?}",
                    view.dtype(),
                    var.size()
                ),
            ));
        }
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(format_err(path, format!("{name}[{i}] is not finite")));
        }
        var.copy_(&Tensor::from_slice(&values).view(shape.as_slice()));
    }
    Ok(NativeCnn {
        vs,
        net,
        metadata,
        input: spectrogram,
        hash: ModelHash::of(bytes),
    })
}

fn parse_shape(text: &str) -> Option<[i64; 3]> {
    let dims: Vec<i64> = text
        .split(',')
        .map(|d| d.trim().parse().ok())
        .collect::<Option<_>>()?;
    let dims: [i64; 3] = dims.try_into().ok()?;
    dims.iter().all(|&d| d > 0).then_some(dims)
}
