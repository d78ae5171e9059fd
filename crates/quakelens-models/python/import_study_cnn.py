"""Import the study's CNN (a PyTorch state_dict) as a quakelens CNN file.

    python import_study_cnn.py MODEL.pth OUT.safetensors [--spectrogram log|linear]
                               [--stats STATS.json] [--no-quantize]

The study saved `torch.save(model.state_dict(), "x.pth")` of a network with parameters
conv1.*, BatchNorm1.*, conv2.*, BatchNorm2.*, conv3.*, BatchNorm3.*, fc1.*, fc2.* (outputs
[foreshock, aftershock]): the same network as quakelens' CNN2D, whose names are conv1, bn1, …,
plus a per-channel input standardisation (identity here: the study normalised its images before
the network, and quakelens' image pipeline does the same). The file records the input the model
was trained on (the study's PNG images of log or linear spectrograms, with their normalisation
statistics), so quakelens refuses windows of another input.

Every parameter is checked: a missing, extra or misshapen one is an error naming it.
"""
import argparse
import json
import struct
import sys

import numpy as np

FORMAT = "quakelens-cnn"
FORMAT_VERSION = "2"
STUDY_MEAN = [0.2181, 0.2217, 0.2066]
STUDY_STD = [0.2255, 0.2262, 0.2207]

# The study's name -> quakelens' name, and the shape each must have for 3 × 33 × 153 input.
LAYERS = [
    ("conv1", "conv1", {"weight": (32, 3, 3, 3), "bias": (32,)}),
    ("BatchNorm1", "bn1", {"weight": (32,), "bias": (32,), "running_mean": (32,), "running_var": (32,)}),
    ("conv2", "conv2", {"weight": (64, 32, 3, 3), "bias": (64,)}),
    ("BatchNorm2", "bn2", {"weight": (64,), "bias": (64,), "running_mean": (64,), "running_var": (64,)}),
    ("conv3", "conv3", {"weight": (128, 64, 3, 3), "bias": (128,)}),
    ("BatchNorm3", "bn3", {"weight": (128,), "bias": (128,), "running_mean": (128,), "running_var": (128,)}),
    ("fc1", "fc1", {"weight": (128, 128 * 4 * 19), "bias": (128,)}),
    ("fc2", "fc2", {"weight": (2, 128), "bias": (2,)}),
]


class ImportError_(Exception):
    pass


def convert(state, spectrogram="log", stats=None, quantize=True):
    """The study's state_dict (name -> tensor or array) as quakelens' tensors and metadata."""
    expected = {}
    for study, ours, params in LAYERS:
        for p, shape in params.items():
            expected[f"{study}.{p}"] = (f"{ours}.{p}", shape)
    given = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    missing = sorted(set(expected) - set(given))
    extra = sorted(set(given) - set(expected))
    problems = []
    if missing:
        problems.append("missing parameters: " + ", ".join(missing))
    if extra:
        problems.append("parameters the study's CNN does not have: " + ", ".join(extra))
    tensors = {}
    for name, (ours, shape) in expected.items():
        if name not in given:
            continue
        value = np.asarray(given[name].detach().cpu().numpy() if hasattr(given[name], "detach") else given[name],
                           dtype=np.float32)
        if tuple(value.shape) != shape:
            problems.append(f"{name} has shape {tuple(value.shape)}, the study's CNN has {shape}")
            continue
        if not np.all(np.isfinite(value)):
            problems.append(f"{name} holds a value that is not finite")
            continue
        tensors[ours] = value
    if problems:
        raise ImportError_("; ".join(problems))
    tensors["input_norm.mean"] = np.zeros(3, dtype=np.float32)
    tensors["input_norm.std"] = np.ones(3, dtype=np.float32)
    mean, std = (stats or {}).get("mean", STUDY_MEAN), (stats or {}).get("std", STUDY_STD)
    kind = "png" if quantize else "minmax"
    fmt = lambda v: ",".join(repr(float(x)) for x in v)
    metadata = {
        "quakelens.format": FORMAT,
        "quakelens.format_version": FORMAT_VERSION,
        "quakelens.arch": "CNN2D",
        "quakelens.input_shape": "3,33,153",
        "quakelens.input": f"{spectrogram}+{kind}+norm({fmt(mean)}/{fmt(std)})",
        "quakelens.classes": "foreshock,aftershock",
        "quakelens.training": json.dumps({"imported_from": "the study's state_dict"}),
    }
    return tensors, metadata


def write_safetensors(path, tensors, metadata):
    """safetensors: an 8-byte header length, a JSON header, then the raw little-endian data."""
    header = {"__metadata__": metadata}
    blobs, offset = [], 0
    for name in sorted(tensors):
        data = np.ascontiguousarray(tensors[name], dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="the study's state_dict (.pth), saved with torch.save")
    ap.add_argument("out", help="quakelens CNN file to write (.safetensors)")
    ap.add_argument("--spectrogram", choices=["log", "linear"], default="log",
                    help="the spectrograms the model was trained on")
    ap.add_argument("--stats", help='JSON {"mean": [3], "std": [3]} of the training images (default: the study\'s log statistics)')
    ap.add_argument("--no-quantize", action="store_true", help="the model was trained on float images, not PNGs")
    args = ap.parse_args()
    import torch

    state = torch.load(args.model, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        sys.exit(f"{args.model}: not a state_dict (a dict of tensors) but a {type(state).__name__}")
    stats = json.load(open(args.stats)) if args.stats else None
    try:
        tensors, metadata = convert(state, args.spectrogram, stats, not args.no_quantize)
    except ImportError_ as e:
        sys.exit(f"{args.model}: {e}")
    write_safetensors(args.out, tensors, metadata)


if __name__ == "__main__":
    main()
