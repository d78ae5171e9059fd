"""Reference side of the models' parity tests and benchmarks (PyTorch, scikit-learn, h5py).

Arrays cross as raw little-endian float64 files. Commands:
  torchscript OUT.pt INPUTS LOGITS N SEED      trace a random CNN2D, write inputs and its logits
  native-logits MODEL.safetensors INPUTS N OUT  our CNN file evaluated by PyTorch
  sklearn-forest OUT.arrow XTEST PRED ROWS FEATURES TREES SEED
  bench-cnn MODEL.safetensors N BATCH THREADS   PyTorch eager windows/s (JSON on stdout)
  bench-forest X Y ROWS FEATURES TREES JOBS     sklearn fit seconds (JSON on stdout)
  dset DIR STATION N                           a small Laurenti D-set written with h5py
"""
import json
import sys
import time

import numpy as np


def read(path, dtype=np.float64):
    return np.fromfile(path, dtype="<f8").astype(dtype)


def write(path, values):
    np.asarray(values, dtype="<f8").tofile(path)


def cnn2d(normalized=False):
    import torch
    import torch.nn as nn

    class CNN2D(nn.Module):
        """The study's network (conv-BN-pool-ReLU ×2, conv-BN-ReLU, fc 128, fc 2)."""

        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 32, 3, padding=1)
            self.bn1 = nn.BatchNorm2d(32)
            self.conv2 = nn.Conv2d(32, 64, 3, stride=2, padding=1)
            self.bn2 = nn.BatchNorm2d(64)
            self.conv3 = nn.Conv2d(64, 128, 3, padding=1)
            self.bn3 = nn.BatchNorm2d(128)
            self.fc1 = nn.Linear(128 * 4 * 19, 128)
            self.fc2 = nn.Linear(128, 2)
            self.pool = nn.MaxPool2d(2)

        def forward(self, x):
            x = torch.relu(self.pool(self.bn1(self.conv1(x))))
            x = torch.relu(self.pool(self.bn2(self.conv2(x))))
            x = torch.relu(self.bn3(self.conv3(x)))
            return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))

    class InputNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("mean", torch.zeros(3))
            self.register_buffer("std", torch.ones(3))

    class Normalized(CNN2D):
        """CNN2D with quakelens' stored per-channel standardisation in front."""

        def __init__(self):
            super().__init__()
            self.input_norm = InputNorm()

        def forward(self, x):
            m = self.input_norm.mean.view(1, -1, 1, 1)
            s = self.input_norm.std.view(1, -1, 1, 1)
            return super().forward((x - m) / s)

    return Normalized() if normalized else CNN2D()


def load_safetensors(path):
    import torch

    raw = open(path, "rb").read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    meta = header.pop("__metadata__", {})
    base = 8 + n
    state = {}
    for name, info in header.items():
        assert info["dtype"] == "F32", name
        a, b = info["data_offsets"]
        arr = np.frombuffer(raw[base + a : base + b], dtype="<f4").reshape(info["shape"])
        state[name] = torch.from_numpy(arr.copy())
    return state, meta


def load_native(path):
    model = cnn2d(normalized=True)
    state, meta = load_safetensors(path)
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected, unexpected
    assert all(m.endswith("num_batches_tracked") for m in missing), missing
    return model.eval(), meta


def randomize(model, seed):
    import torch

    torch.manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def cmd_torchscript(out, inputs_path, logits_path, n, seed):
    import torch

    model = randomize(cnn2d(), int(seed))
    x = torch.randn(int(n), 3, 33, 153, generator=torch.Generator().manual_seed(int(seed) + 1))
    with torch.no_grad():
        traced = torch.jit.trace(model, x[:1])
        traced.save(out)
        logits = model(x)
    write(inputs_path, x.numpy().ravel())
    write(logits_path, logits.numpy().ravel())


def cmd_native_logits(model_path, inputs_path, n, out):
    import torch

    model, _ = load_native(model_path)
    x = torch.from_numpy(read(inputs_path, np.float32).reshape(int(n), 3, 33, 153))
    with torch.no_grad():
        write(out, model(x).numpy().ravel())


def threshold_probes(model, X, per_tree=None):
    """Rows that reach a split and sit on its threshold: for each internal node (of every tree;
    at most `per_tree` per tree, evenly spread), a training row through that node with the
    node's own feature set to the float32 threshold and to the float32 values on either side,
    where `x <= t` decides the path. Float32-exact, as trees compare."""
    probes = []
    for e in model.estimators_:
        t = e.tree_
        path = e.decision_path(X.astype(np.float32)).tocsc()
        internal = np.flatnonzero(t.children_left != -1)
        if per_tree is not None and len(internal) > per_tree:
            internal = internal[np.linspace(0, len(internal) - 1, per_tree).astype(int)]
        for n in internal:
            rows = path[:, n].nonzero()[0]
            if len(rows) == 0:
                continue
            base = X[rows[0]].astype(np.float32)
            th = np.float32(t.threshold[n])
            for v in (np.nextafter(th, np.float32(-np.inf)), th, np.nextafter(th, np.float32(np.inf))):
                row = base.copy()
                row[t.feature[n]] = v
                probes.append(row)
    return np.array(probes, dtype=np.float32).astype(np.float64)


def cmd_sklearn_forest(out, xtest_path, pred_path, rows, features, trees, seed):
    from sklearn.ensemble import RandomForestRegressor

    from export_sklearn_forest import export_forest

    rng = np.random.default_rng(int(seed))
    rows, features = int(rows), int(features)
    X = rng.normal(size=(rows, features))
    X[:, 0] = np.round(X[:, 0], 1)  # ties and repeated values, as real features have
    y = X[:, 0] * 2 + np.sin(3 * X[:, 1]) + 0.3 * rng.normal(size=rows)
    model = RandomForestRegressor(n_estimators=int(trees), random_state=int(seed), n_jobs=1).fit(X, y)
    export_forest(model, out, [f"x{i}" for i in range(features)])
    Xt = rng.normal(size=(rows // 2, features))
    Xt[:, 0] = np.round(Xt[:, 0], 1)
    # Also every split of every tree, on its own feature at its threshold and either side.
    Xt = np.vstack([Xt.astype(np.float32).astype(np.float64), threshold_probes(model, X)])
    write(xtest_path, Xt.ravel())
    write(pred_path, model.predict(Xt))


def cmd_bench_cnn(model_path, n, batch, threads):
    import torch

    torch.set_num_threads(int(threads))
    model, _ = load_native(model_path)
    n, batch = int(n), int(batch)
    x = torch.randn(n, 3, 33, 153, generator=torch.Generator().manual_seed(0))
    best = float("inf")
    with torch.inference_mode():
        model(x[:batch])
        for _ in range(3):
            t = time.perf_counter()
            for i in range(0, n, batch):
                model(x[i : i + batch])
            best = min(best, time.perf_counter() - t)
    print(json.dumps({"windows_per_s": n / best, "torch": torch.__version__}))


def cmd_bench_forest(x_path, y_path, rows, features, trees, jobs):
    import sklearn
    from sklearn.ensemble import RandomForestRegressor

    X = read(x_path).reshape(int(rows), int(features))
    y = read(y_path)
    t = time.perf_counter()
    model = RandomForestRegressor(n_estimators=int(trees), n_jobs=int(jobs), random_state=0).fit(X, y)
    seconds = time.perf_counter() - t
    depth = max(e.tree_.max_depth for e in model.estimators_)
    print(json.dumps({"seconds": seconds, "max_depth": int(depth), "sklearn": sklearn.__version__}))


def cmd_dset(out_dir, station, n):
    """Laurenti's D-set layout: <STA>_waveforms_{pre,post}.hdf5 (one (3, 2500) float64 dataset
    per trace_name) and <STA>_attributes_{pre,post}.csv. One trace per file has only 2 rows."""
    import csv
    import os

    import h5py

    rng = np.random.default_rng(5)
    n = int(n)
    for part, cls in (("pre", 0), ("post", 1)):
        names = [f"{station}.{part}.{i:04d}" for i in range(n)]
        with h5py.File(os.path.join(out_dir, f"{station}_waveforms_{part}.hdf5"), "w") as h:
            for i, name in enumerate(names):
                t = np.arange(2500) / 100.0
                env = np.exp(-np.clip(t - 5.0, 0, None) / (3.0 + cls)) * (t >= 5.0)
                data = rng.normal(size=(3, 2500)) * 0.05 + env * np.sin(2 * np.pi * (8 - 4 * cls) * t) * (1 + i % 3)
                h.create_dataset(name, data=data)
            h.create_dataset(f"{station}.{part}.short", data=rng.normal(size=(2, 2500)))
        with open(os.path.join(out_dir, f"{station}_attributes_{part}.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["trace_name", "station_code", "trace_start_time", "source_magnitude",
                        "p_travel_sec", "s_travel_sec", "source_depth_km", "source_latitude",
                        "source_longitude", "receiver_latitude", "receiver_longitude"])
            for i, name in enumerate(names + [f"{station}.{part}.short"]):
                w.writerow([name, station, f"2016-10-{20 + cls:02d}T{i // 60 % 24:02d}:{i % 60:02d}:00.000000Z",
                            1.0 + (i % 30) / 10.0, 2.0 + i % 5, 3.5 + i % 5, 8.0, 42.8, 13.1, 42.9, 13.2])


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {
        "torchscript": cmd_torchscript,
        "native-logits": cmd_native_logits,
        "sklearn-forest": cmd_sklearn_forest,
        "bench-cnn": cmd_bench_cnn,
        "bench-forest": cmd_bench_forest,
        "dset": cmd_dset,
    }[cmd](*args)
