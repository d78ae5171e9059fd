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


def minmax_image(x):
    """log1p, then per-channel min-max and normalisation, in float64 (no PNG)."""
    img = np.log1p(spectrogram(x))
    lo = img.min(axis=(2, 3), keepdims=True)
    hi = img.max(axis=(2, 3), keepdims=True)
    u = (img - lo) / (hi - lo)
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


def study_channel_features(x):
    """The study's feature function for one channel, expression for expression."""
    f, P = scipy.signal.welch(x)
    return [
        np.max(x), np.min(x), np.mean(x), np.std(x), np.median(x), np.ptp(x),
        np.sum(x ** 2), np.sqrt(np.mean(x ** 2)), np.mean(np.abs(x)),
        np.max(P), f[np.argmax(P)], np.mean(P),
        scipy.stats.entropy(P / np.sum(P)),
        np.exp(np.mean(np.log(P))) / np.mean(P),
        len(np.where(np.diff(np.signbit(x)))[0]),
        len(scipy.signal.find_peaks(x)[0]),
        scipy.stats.kurtosis(x), scipy.stats.skew(x), np.var(x),
        np.percentile(x, 75) - np.percentile(x, 25),
        np.argmax(x), len(x) - np.argmax(x), np.max(x) - np.min(x),
    ]


def study_features(x):
    """(w, 3, n) -> (w, 69): channel i is row i, channel-major."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.array([[v for c in range(3) for v in study_channel_features(w[c])] for w in x])


def study_image(x, power, workdir):
    """The study's image pipeline through real files: per channel scipy.signal.spectrogram,
    log1p (log power), (v - min) / (max - min), matplotlib.image.imsave as PNG, PIL
    .convert("RGB"), then torchvision's ToTensor / Normalize arithmetic in float32.
    (w, 3, n) -> bytes (w, 3, 33, frames) and normalised values of the same shape."""
    import os

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.image
    from PIL import Image

    mean = np.asarray(STUDY_MEAN, dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(STUDY_STD, dtype=np.float32).reshape(3, 1, 1)
    all_bytes, all_norm = [], []
    for i, w in enumerate(x):
        chans = []
        for c in range(3):
            _, _, s = scipy.signal.spectrogram(w[c], fs=FS, nperseg=64, noverlap=48)
            if power == "log":
                s = np.log1p(s)
            chans.append((s - s.min()) / (s.max() - s.min()))
        img = np.stack(chans, axis=-1)
        path = os.path.join(workdir, f"window{i}.png")
        matplotlib.image.imsave(path, img)
        rgb = np.array(Image.open(path).convert("RGB"))  # (33, frames, 3) uint8
        chw = np.transpose(rgb, (2, 0, 1))
        all_bytes.append(chw)
        all_norm.append((chw.astype(np.float32) / np.float32(255) - mean) / std)
    return np.array(all_bytes), np.array(all_norm)


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
        w, n = int(args[0]), int(args[1])
        save(dst, minmax_image(load(src, w, 3, n)))
    elif cmd == "log1p":
        w, n = int(args[0]), int(args[1])
        save(dst, np.log1p(spectrogram(load(src, w, 3, n))))
    elif cmd == "features":
        w, n = int(args[0]), int(args[1])
        save(dst, features(load(src, w, 3, n)))
    elif cmd == "study-features":
        w, n = int(args[0]), int(args[1])
        save(dst, study_features(load(src, w, 3, n)))
    elif cmd == "study-image":
        import os
        w, n, power = int(args[0]), int(args[1]), args[2]
        raw, norm = study_image(load(src, w, 3, n), power, os.path.dirname(dst))
        save(dst, norm)
        save(dst + ".bytes", raw.astype(np.float64))
    elif cmd == "resample":
        n, up, down = int(args[0]), int(args[1]), int(args[2])
        save(dst, scipy.signal.resample_poly(load(src, n), up, down))
    elif cmd == "stalta":
        from obspy.signal.trigger import recursive_sta_lta, trigger_onset
        n, nsta, nlta, on, off = int(args[0]), int(args[1]), int(args[2]), float(args[3]), float(args[4])
        cft = recursive_sta_lta(load(src, n), nsta, nlta)
        picks = np.asarray(trigger_onset(cft, on, off), dtype=float).reshape(-1)
        save(dst, np.concatenate([[len(picks) // 2], picks, cft]))
    elif cmd == "bandpass":
        # ObsPy's causal bandpass of one trace at 100 Hz.
        import obspy
        n, fmin, fmax, corners = int(args[0]), float(args[1]), float(args[2]), int(args[3])
        tr = obspy.Trace(data=load(src, n).copy(), header={"sampling_rate": 100.0})
        tr.filter("bandpass", freqmin=fmin, freqmax=fmax, corners=corners, zerophase=False)
        save(dst, tr.data)
    elif cmd == "lowpass":
        # scipy's zero-phase Butterworth low-pass of one trace at 100 Hz.
        n, cutoff, order = int(args[0]), float(args[1]), int(args[2])
        sos = scipy.signal.butter(order, cutoff, btype="low", fs=100.0, output="sos")
        save(dst, scipy.signal.sosfiltfilt(sos, load(src, n)))
    elif cmd == "obspy-read":
        # ObsPy's reading of a miniSEED file (src): per trace id, start (ns), rate, npts in
        # dst as JSON, every sample (as float64) in dst + ".f64".
        import obspy
        traces = obspy.read(src, format="MSEED")
        meta = [{"id": t.id, "start_ns": t.stats.starttime.ns, "sampling_rate": t.stats.sampling_rate,
                 "npts": int(t.stats.npts)} for t in traces]
        with open(dst, "w") as out:
            json.dump(meta, out)
        save(dst + ".f64", np.concatenate([t.data.astype(np.float64) for t in traces]) if traces else np.zeros(0))
    elif cmd == "bench":
        # Times the reference per-window transforms on the same windows the Rust side used.
        # One window at a time, as a streaming service would call it.
        w, n, repeat, n_spec, n_feat = (int(a) for a in args[:5])
        x = load(src, w, 3, n)
        spec_s = timed(lambda: [np.log1p(spectrogram(win[None])) for win in x[:n_spec]], repeat)
        feat_s = timed(lambda: study_features(x[:n_feat]), repeat)
        with open(dst, "w") as out:
            json.dump({"spectrogram_windows_per_s": n_spec / spec_s,
                       "features_windows_per_s": n_feat / feat_s}, out)
    else:
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv[1:])
