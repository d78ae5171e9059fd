//! The 1-D CNN's file and the import of the paper's PyTorch state_dicts.
//!
//! The file is the CNN file format (safetensors, PyTorch's names, little-endian f32) with
//! `quakelens.arch` = `CONV1D`, `quakelens.input` = `waveform` (raw samples as stored; the network
//! scales each channel itself), `quakelens.input_shape` = `3,2500` and `quakelens.classes` (2, 4
//! or 9 names, in logit order). A state_dict saved by PyTorch (`torch.save(net.state_dict())`,
//! or `safetensors.torch.save_file`) with the paper's names imports unchanged: every parameter
//! and batch-norm statistic is checked by name and shape, `num_batches_tracked` is ignored (it
//! only matters for momentum-free batch norm in training), and the class count is read from
//! `layer_out`.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use super::arch::{Conv1dNet, WAVEFORM_SHAPE};
use crate::cnn::{format_err, write_model_file, CnnError, CNN_FORMAT, CNN_FORMAT_VERSION};
use crate::hash::ModelHash;
use crate::ttf::ClassCount;

pub const CONV1D_ARCH: &str = "CONV1D";
/// What a CONV1D model takes: the window's raw samples.
pub const WAVEFORM_INPUT: &str = "waveform";

/// A loaded native model: its variables, class names and what the file says about it.
pub struct NativeConv1d {
    pub vs: VarStore,
    pub net: Conv1dNet,
    pub classes: Vec<String>,
    pub metadata: HashMap<String, String>,
    pub hash: ModelHash,
}

/// Writes a [`Conv1dNet`]'s variables with their class names; returns the file's hash.
pub fn save_conv1d(
    vs: &VarStore,
    classes: &[String],
    training: Option<&serde_json::Value>,
    path: &Path,
) -> Result<ModelHash, CnnError> {
    write_model_file(
        vs,
        &[
            ("quakelens.arch", CONV1D_ARCH.to_string()),
            (
                "quakelens.input_shape",
                format!("{},{}", WAVEFORM_SHAPE[0], WAVEFORM_SHAPE[1]),
            ),
            ("quakelens.input", WAVEFORM_INPUT.to_string()),
            ("quakelens.classes", classes.join(",")),
        ],
        training,
        path,
    )
}

/// Whether `path` is a quakelens CONV1D file, by its safetensors header alone (the weights are
/// not read); anything else, TorchScript included, is left to the spectrogram CNN's loader and
/// its errors.
pub fn is_conv1d_file(path: &Path) -> Result<bool, CnnError> {
    use std::io::Read;
    let io = |error| CnnError::Io {
        path: path.display().to_string(),
        error,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut len = [0u8; 8];
    if file.read_exact(&mut len).is_err() {
        return Ok(false);
    }
    // safetensors' own bound on a header.
    let len = u64::from_le_bytes(len);
    if len > 100_000_000 {
        return Ok(false);
    }
    let mut header = Vec::new();
    file.take(len).read_to_end(&mut header).map_err(io)?;
    let arch = serde_json::from_slice::<serde_json::Value>(&header)
        .ok()
        .and_then(|h| {
            h["__metadata__"]["quakelens.arch"]
                .as_str()
                .map(String::from)
        });
    Ok(arch.as_deref() == Some(CONV1D_ARCH))
}

/// Reads a file written by [`save_conv1d`].
pub fn load_conv1d(path: &Path, bytes: &[u8], device: Device) -> Result<NativeConv1d, CnnError> {
    let (_, header) =
        SafeTensors::read_metadata(bytes).map_err(|e| format_err(path, format!("{e:?}")))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let get = |key: &str| metadata.get(key).map(String::as_str).unwrap_or("");
    if get("quakelens.format") != CNN_FORMAT || get("quakelens.arch") != CONV1D_ARCH {
        return Err(format_err(
            path,
            format!(
                "not a quakelens {CONV1D_ARCH} file (format {:?}, arch {:?}; a spectrogram CNN2D file is scored as one, not as a waveform model)",
                get("quakelens.format"),
                get("quakelens.arch")
            ),
        ));
    }
    if get("quakelens.format_version") != CNN_FORMAT_VERSION {
        return Err(format_err(
            path,
            format!(
                "format version {:?}; this build reads v{CNN_FORMAT_VERSION}",
                get("quakelens.format_version")
            ),
        ));
    }
    let shape = format!("{},{}", WAVEFORM_SHAPE[0], WAVEFORM_SHAPE[1]);
    if get("quakelens.input") != WAVEFORM_INPUT || get("quakelens.input_shape") != shape {
        return Err(format_err(
            path,
            format!(
                "input {:?} of shape {:?}; a {CONV1D_ARCH} model takes {WAVEFORM_INPUT} {shape}",
                get("quakelens.input"),
                get("quakelens.input_shape")
            ),
        ));
    }
    let classes: Vec<String> = get("quakelens.classes")
        .split(',')
        .filter(|c| !c.is_empty())
        .map(String::from)
        .collect();
    let tensors = safetensors_tensors(path, bytes)?;
    let (vs, net) = from_state(path, &tensors, device)?;
    if classes.len() as i64 != net.classes {
        return Err(format_err(
            path,
            format!(
                "quakelens.classes names {} classes, layer_out has {}",
                classes.len(),
                net.classes
            ),
        ));
    }
    Ok(NativeConv1d {
        vs,
        net,
        classes,
        metadata,
        hash: ModelHash::of(bytes),
    })
}

/// A PyTorch state_dict of the paper's network: `torch.save` output (zip) or a safetensors file.
/// Returns the network and its class names (from the class count: 2, 4 or 9).
pub fn import_state_dict(
    path: &Path,
    device: Device,
) -> Result<(VarStore, Conv1dNet, Vec<String>), CnnError> {
    let bytes = std::fs::read(path).map_err(|error| CnnError::Io {
        path: path.display().to_string(),
        error,
    })?;
    let tensors: HashMap<String, Tensor> = if bytes.starts_with(b"PK\x03\x04") {
        crate::torch_save::read_state_dict(&bytes)
            .map_err(|e| format_err(path, format!("reading the PyTorch state_dict: {e}")))?
    } else {
        safetensors_tensors(path, &bytes)?
    };
    let (vs, net) = from_state(path, &tensors, device)?;
    let classes = ClassCount::from_count(net.classes).ok_or_else(|| {
        format_err(
            path,
            format!(
                "layer_out has {} outputs; the paper's class schemes are 2, 4 or 9",
                net.classes
            ),
        )
    })?;
    Ok((vs, net, classes.names()))
}

fn safetensors_tensors(path: &Path, bytes: &[u8]) -> Result<HashMap<String, Tensor>, CnnError> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| format_err(path, format!("{e:?}")))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let t = match view.dtype() {
            Dtype::F32 => {
                let values: Vec<f32> = view
                    .data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                Tensor::from_slice(&values).view(shape.as_slice())
            }
            // `num_batches_tracked` is int64 in PyTorch; it is not used.
            Dtype::I64 if name.ends_with("num_batches_tracked") => continue,
            other => {
                return Err(format_err(
                    path,
                    format!("{name}: {other:?}; parameters must be F32"),
                ))
            }
        };
        out.insert(name, t);
    }
    Ok(out)
}

/// The network with every variable copied from `tensors`, each checked by name and shape.
fn from_state(
    path: &Path,
    tensors: &HashMap<String, Tensor>,
    device: Device,
) -> Result<(VarStore, Conv1dNet), CnnError> {
    let classes = match tensors.get("layer_out.weight").map(Tensor::size) {
        Some(s) if s.len() == 2 && s[0] >= 2 => s[0],
        Some(s) => {
            return Err(format_err(
                path,
                format!("layer_out.weight has shape {s:?}"),
            ))
        }
        None => {
            let mut names: Vec<&String> = tensors.keys().collect();
            names.sort();
            names.truncate(6);
            return Err(format_err(
                path,
                format!("no layer_out.weight: not the paper's 1-D CNN (tensors {names:?}…)"),
            ));
        }
    };
    let vs = VarStore::new(device);
    let net = Conv1dNet::new(&vs.root(), classes);
    let mut expected = vs.variables();
    for name in tensors.keys() {
        if !expected.contains_key(name) && !name.ends_with("num_batches_tracked") {
            return Err(format_err(
                path,
                format!("{name} is not a parameter of the paper's 1-D CNN"),
            ));
        }
    }
    let _guard = tch::no_grad_guard();
    for (name, var) in expected.iter_mut() {
        let src = tensors
            .get(name)
            .ok_or_else(|| format_err(path, format!("tensor {name} is missing")))?;
        if src.size() != var.size() {
            return Err(format_err(
                path,
                format!("{name}: shape {:?}, expected {:?}", src.size(), var.size()),
            ));
        }
        let src = src.to_kind(Kind::Float);
        let finite = bool::try_from(src.isfinite().all()).unwrap_or(false);
        if !finite {
            return Err(format_err(
                path,
                format!("{name} holds a value that is not finite"),
            ));
        }
        var.copy_(&src.to_device(device));
    }
    Ok((vs, net))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conv1d_file_is_told_apart_by_its_header() {
        let dir = tempfile::tempdir().unwrap();
        let vs = VarStore::new(Device::Cpu);
        let _net = Conv1dNet::new(&vs.root(), 2);
        let conv1d = dir.path().join("conv1d.safetensors");
        save_conv1d(&vs, &ClassCount::Two.names(), None, &conv1d).unwrap();
        assert!(is_conv1d_file(&conv1d).unwrap());
        let vs2 = VarStore::new(Device::Cpu);
        let _cnn = crate::cnn::Cnn2d::new(&vs2.root(), crate::cnn::INPUT_SHAPE);
        let cnn2d = dir.path().join("cnn2d.safetensors");
        crate::cnn::save_cnn(
            &vs2,
            crate::cnn::INPUT_SHAPE,
            &Default::default(),
            None,
            &cnn2d,
        )
        .unwrap();
        assert!(!is_conv1d_file(&cnn2d).unwrap());
        let zip = dir.path().join("module.pt");
        std::fs::write(&zip, b"PK\x03\x04 a TorchScript archive").unwrap();
        assert!(!is_conv1d_file(&zip).unwrap());
        assert!(is_conv1d_file(&dir.path().join("absent")).is_err());
    }
}
