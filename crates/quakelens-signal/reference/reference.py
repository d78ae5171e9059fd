"""Reference computations with the tools quakelens must agree with (numpy, scipy, ObsPy).

Called by the parity tests and the benchmark with raw little-endian float64 files:
    python reference.py COMMAND IN OUT [ARGS...]
Every computation here is a direct call of the reference library; nothing is re-derived.
"""
import json
import sys
import time

import numpy as np
import scipy.signal
import scipy.stats

FS = 100.0
STUDY_MEAN = [0.2181, 0.2217, 0.2066]
STUDY_STD = [0.2255, 0.2262, 0.2207]


def load(path, *shape):
    return np.fromfile(path, dtype="<f8").reshape(shape)


def save(path, arr):
    np.ascontiguousarray(arr, dtype="<f8").tofile(path)


def spectrogram(x):
    """(w, 3, n) -> (w, 3, 33, frames): scipy.signal.spectrogram with the study's parameters."""
    _, _, sxx = scipy.signal.spectrogram(x, fs=FS, nperseg=64, noverlap=48)
    return sxx


def image(x, quantize):
    """log1p, then the study's image pipeline (min-max, 8-bit, normalise) per channel."""
    img = np.log1p(spectrogram(x))
    lo = img.min(axis=(2, 3), keepdims=True)
    hi = img.max(axis=(2, 3), keepdims=True)
    u = (img - lo) / (hi - lo)
    if quantize:
        u = np.round(u * 255.0) / 255.0
    mean = np.asarray(STUDY_MEAN).reshape(1, 3, 1, 1)
    std = np.asarray(STUDY_STD).reshape(1, 3, 1, 1)
    return (u - mean) / std


def channel_features(x):
    f, p = scipy.signal.welch(x, fs=FS)
    prob = p / np.sum(p)
    nz = prob[prob > 0]
    flat = 0.0 if np.any(p == 0) else np.exp(np.mean(np.log(p))) / np.mean(p)
    a = np.abs(x - np.mean(x))
    peak = int(np.argmax(a))
    above = np.nonzero(a >= 0.1 * a[peak])[0]
    return [
        np.max(x), np.min(x), np.mean(x), np.std(x), np.median(x), np.max(x) - np.min(x),
        np.sum(x ** 2), np.sqrt(np.mean(x ** 2)), np.mean(np.abs(x)),
        np.max(p), f[np.argmax(p)], np.mean(p), -np.sum(nz * np.log2(nz)), flat,
        np.count_nonzero(np.diff(np.sign(x))), len(scipy.signal.find_peaks(x)[0]),
        scipy.stats.kurtosis(x), scipy.stats.skew(x), np.var(x),
        np.percentile(x, 75) - np.percentile(x, 25),
        (peak - above[0]) / FS, (above[-1] - peak) / FS, np.ptp(x),
    ]


def features(x):
    """(w, 3, n) -> (w, 69), channel-major."""
    return np.array([[v for c in range(3) for v in channel_features(w[c])] for w in x])


def timed(fn, repeat):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv):
    cmd, src, dst, *args = argv
    if cmd == "spectrogram":
        w, n = int(args[0]), int(args[1])
        save(dst, spectrogram(load(src, w, 3, n)))
    elif cmd == "image":
        w, n, quantize = int(args[0]), int(args[1]), args[2] == "1"
        save(dst, image(load(src, w, 3, n), quantize))
    elif cmd == "log1p":
        w, n = int(args[0]), int(args[1])
        save(dst, np.log1p(spectrogram(load(src, w, 3, n))))
    elif cmd == "features":
        w, n = int(args[0]), int(args[1])
        save(dst, features(load(src, w, 3, n)))
    elif cmd == "resample":
        n, up, down = int(args[0]), int(args[1]), int(args[2])
        save(dst, scipy.signal.resample_poly(load(src, n), up, down))
    elif cmd == "stalta":
        from obspy.signal.trigger import recursive_sta_lta, trigger_onset
        n, nsta, nlta, on, off = int(args[0]), int(args[1]), int(args[2]), float(args[3]), float(args[4])
        cft = recursive_sta_lta(load(src, n), nsta, nlta)
        picks = np.asarray(trigger_onset(cft, on, off), dtype=float).reshape(-1)
        save(dst, np.concatenate([[len(picks) // 2], picks, cft]))
    elif cmd == "bench":
        # Times the reference per-window transforms on the same windows the Rust side used.
        # One window at a time, as a streaming service would call it.
        w, n, repeat, n_spec, n_feat = (int(a) for a in args[:5])
        x = load(src, w, 3, n)
        spec_s = timed(lambda: [np.log1p(spectrogram(win[None])) for win in x[:n_spec]], repeat)
        feat_s = timed(lambda: features(x[:n_feat]), repeat)
        with open(dst, "w") as out:
            json.dump({"spectrogram_windows_per_s": n_spec / spec_s,
                       "features_windows_per_s": n_feat / feat_s}, out)
    else:
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv[1:])
