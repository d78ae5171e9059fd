"""Reference side of the models' parity tests and benchmarks (PyTorch, scikit-learn, h5py).

Arrays cross as raw little-endian float64 files. Commands:
  torchscript OUT.pt INPUTS LOGITS N SEED      trace a random CNN2D, write inputs and its logits
  native-logits MODEL.safetensors INPUTS N OUT  our CNN file evaluated by PyTorch
  sklearn-forest OUT.arrow XTEST PRED ROWS FEATURES TREES SEED
  bench-cnn MODEL.safetensors N BATCH THREADS   PyTorch eager windows/s (JSON on stdout)
  bench-forest X Y ROWS FEATURES TREES JOBS     sklearn fit seconds (JSON on stdout)
  dset DIR STATION N                           a small Laurenti D-set written with h5py
  conv1d DIR N CLASSES SEED                    the paper's 1-D CNN with random weights: state_dict
                                               (torch.save and safetensors), TorchScript, inputs, logits
  conv1d-logits MODEL.safetensors INPUTS N OUT our CONV1D file evaluated by PyTorch
  bench-conv1d MODEL.safetensors N BATCH THREADS [KEEP_FREED_BYTES]
                                               PyTorch eager windows/s (JSON on stdout); with
                                               KEEP_FREED_BYTES, glibc keeps freed blocks as
                                               the quakelens binary does
  ttf-labels IN.json OUT.json                  the paper's time-to-failure classes and split
  multiclass TRUTH PRED K OUT.json             sklearn's balanced accuracy and normalised confusion
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
                        "source_longitude", "receiver_latitude", "receiver_longitude",
                        "source_origin_time"])
            for i, name in enumerate(names + [f"{station}.{part}.short"]):
                # Origins a day apart on either side of Norcia's, written as catalogues do.
                origin = f"2016-10-{29 + 2 * cls:02d} {i // 60 % 24:02d}:{i % 60:02d}:{i % 50 + 0.25:05.2f}"
                w.writerow([name, station, f"2016-10-{20 + cls:02d}T{i // 60 % 24:02d}:{i % 60:02d}:00.000000Z",
                            1.0 + (i % 30) / 10.0, 2.0 + i % 5, 3.5 + i % 5, 8.0, 42.8, 13.1, 42.9, 13.2,
                            origin])


def conv1d_net(classes):
    """The paper's network, written from its definition: seven Conv1d-BatchNorm1d-MaxPool1d(3, 1)-ReLU
    blocks, AvgPool1d(1215), Dropout 0.3, Linear 256 -> classes."""
    import torch
    import torch.nn as nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            spec = [(3, 32, 7, 1), (32, 64, 7, 2), (64, 64, 5, 1), (64, 64, 5, 1),
                    (64, 128, 5, 1), (128, 256, 3, 1), (256, 256, 3, 1)]
            for i, (cin, cout, k, stride) in enumerate(spec, 1):
                setattr(self, f"conv{i}", nn.Conv1d(cin, cout, k, stride=stride))
                setattr(self, f"BatchNorm{i}", nn.BatchNorm1d(cout))
            self.pool = nn.MaxPool1d(3, stride=1)
            self.avg = nn.AvgPool1d(1215)
            self.dropout = nn.Dropout(0.3)
            self.layer_out = nn.Linear(256, classes)

        def forward(self, x):
            # Spelled out block by block so that torch.jit.script accepts it.
            x = torch.relu(self.pool(self.BatchNorm1(self.conv1(x))))
            x = torch.relu(self.pool(self.BatchNorm2(self.conv2(x))))
            x = torch.relu(self.pool(self.BatchNorm3(self.conv3(x))))
            x = torch.relu(self.pool(self.BatchNorm4(self.conv4(x))))
            x = torch.relu(self.pool(self.BatchNorm5(self.conv5(x))))
            x = torch.relu(self.pool(self.BatchNorm6(self.conv6(x))))
            x = torch.relu(self.pool(self.BatchNorm7(self.conv7(x))))
            return self.layer_out(self.dropout(torch.flatten(self.avg(x), 1)))

    return Net()


def randomize_bn(model, seed):
    import torch

    torch.manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.num_batches_tracked.fill_(17)
    return model.eval()


def write_safetensors(path, state, meta=None):
    """A plain safetensors file (the format is a JSON header and raw little-endian bytes)."""
    header, blobs, offset = {}, [], 0
    for name, t in state.items():
        a = t.detach().cpu().numpy()
        dtype = {"float32": "F32", "int64": "I64"}[str(a.dtype)]
        raw = a.astype(a.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if meta:
        header["__metadata__"] = meta
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text + b"".join(blobs))


def waveforms(n, seed):
    """Raw windows as stored: counts of very different scale per channel, one channel silent."""
    rng = np.random.default_rng(int(seed))
    x = rng.normal(size=(n, 3, 2500)) * rng.uniform(1, 5000, size=(n, 3, 1))
    x[0, 2] = 0.0
    return x.astype(np.float32)


def cmd_conv1d(out_dir, n, classes, seed):
    import os

    import torch
    import torch.nn.functional as F

    model = randomize_bn(conv1d_net(int(classes)), int(seed))
    state = model.state_dict()
    torch.save(state, os.path.join(out_dir, "state.pt"))
    write_safetensors(os.path.join(out_dir, "state.safetensors"), state)
    # The same weights as float64, and with tensors that are views: an offset into a larger
    # storage, a transposed stride, two tensors sharing one storage.
    torch.save({k: v.double() if v.is_floating_point() else v for k, v in state.items()},
               os.path.join(out_dir, "state_double.pt"))
    views = dict(state)
    w = state["conv1.weight"]
    big = torch.zeros(2 * w.numel())
    big[w.numel():] = w.flatten()
    views["conv1.weight"] = big[w.numel():].view(w.shape)
    views["conv2.weight"] = state["conv2.weight"].transpose(0, 1).contiguous().transpose(0, 1)
    shared = torch.cat([state["BatchNorm1.running_mean"], state["BatchNorm1.running_var"]])
    views["BatchNorm1.running_mean"], views["BatchNorm1.running_var"] = shared[:32], shared[32:]
    torch.save(views, os.path.join(out_dir, "state_views.pt"))
    # What users save by mistake: the module itself, and a training checkpoint.
    torch.save(torch.nn.Sequential(torch.nn.Conv1d(3, 32, 7)), os.path.join(out_dir, "module.pt"))
    torch.save({"epoch": 3, "model_state_dict": state}, os.path.join(out_dir, "checkpoint.pt"))
    x = torch.from_numpy(waveforms(int(n), int(seed) + 1))
    with torch.no_grad():
        logits = model(F.normalize(x, dim=-1))
        torch.jit.script(model).save(os.path.join(out_dir, "scripted.pt"))
    write(os.path.join(out_dir, "x.f64"), x.numpy().ravel())
    write(os.path.join(out_dir, "logits.f64"), logits.numpy().ravel())


def load_conv1d(path):
    import torch

    state, meta = load_safetensors(path)
    classes = meta["quakelens.classes"].split(",")
    model = conv1d_net(len(classes))
    missing, unexpected = model.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()}, strict=False)
    assert not unexpected, unexpected
    assert all(m.endswith("num_batches_tracked") for m in missing), missing
    return model.eval(), meta


def cmd_conv1d_logits(model_path, inputs_path, n, out):
    import torch
    import torch.nn.functional as F

    model, _ = load_conv1d(model_path)
    x = torch.from_numpy(read(inputs_path, np.float32).reshape(int(n), 3, 2500))
    with torch.no_grad():
        write(out, model(F.normalize(x, dim=-1)).numpy().ravel())


def keep_freed_blocks(limit_bytes):
    """glibc's mallopt as the quakelens binary sets it (M_MMAP_THRESHOLD and M_TRIM_THRESHOLD):
    freed blocks up to the limit stay in the heap instead of being unmapped and faulted in again."""
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    for param in (M_MMAP_THRESHOLD, M_TRIM_THRESHOLD):
        if libc.mallopt(param, int(limit_bytes)) != 1:
            raise SystemExit(f"mallopt({param}) refused")


def cmd_bench_conv1d(model_path, n, batch, threads, keep_freed_bytes="0"):
    if int(keep_freed_bytes) > 0:
        keep_freed_blocks(keep_freed_bytes)
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(int(threads))
    model, _ = load_conv1d(model_path)
    n, batch = int(n), int(batch)
    x = torch.from_numpy(waveforms(n, 0))
    best = float("inf")
    with torch.inference_mode():
        model(F.normalize(x[:batch], dim=-1))
        for _ in range(3):
            t = time.perf_counter()
            for i in range(0, n, batch):
                model(F.normalize(x[i : i + batch], dim=-1))
            best = min(best, time.perf_counter() - t)
    print(json.dumps({"windows_per_s": n / best, "torch": torch.__version__}))


def keyed_hash(seed, key):
    """FNV-1a over the seed's 8 little-endian bytes and the key's UTF-8, then SplitMix64's finaliser."""
    mask = (1 << 64) - 1
    h = 0xCBF29CE484222325
    for b in int(seed).to_bytes(8, "little") + key.encode():
        h = ((h ^ b) * 0x100000001B3) & mask
    h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & mask
    h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & mask
    return h ^ (h >> 31)


def cmd_ttf_labels(in_path, out_path):
    """The paper's rules on {events: [[id, origin_ns]], classes, mainshock_ns, middle, seed, valid,
    test}: pre/post balanced by a shuffle (order of keyed_hash), equal-count time-ordered parts
    (numpy.array_split), a middle class for 9; then the time-ordered and the random splits."""
    spec = json.load(open(in_path))
    events = sorted({(e[1], e[0]) for e in spec["events"]})
    main, seed, k = spec["mainshock_ns"], spec["seed"], spec["classes"]
    middle = spec.get("middle")
    mid = [e for e in events if middle and middle[0] <= e[0] < middle[1]]
    rest = [e for e in events if e not in mid]
    pre = [e for e in rest if e[0] < main]
    post = [e for e in rest if e[0] > main]
    n = min(len(pre), len(post))

    def balanced(side):
        if len(side) == n:
            return side
        chosen = sorted(side, key=lambda e: (keyed_hash(seed, e[1]), e[1]))[:n]
        return sorted(chosen)

    parts = {2: 1, 4: 2, 9: 4}[k]
    groups = list(np.array_split(np.arange(n), parts))
    classes = {}
    c = 0
    for side in ([balanced(pre)], [mid] if k == 9 else [], [balanced(post)]):
        for s in side:
            if s is mid:
                for e in s:
                    classes[e[1]] = c
                c += 1
                continue
            for g in groups:
                for i in g:
                    classes[s[i][1]] = c
                c += 1
    head = (1.0 - spec["valid"] - spec["test"]) / 2.0
    time_split = {}
    for cls in range(k):
        ids = [e[1] for e in events if classes.get(e[1]) == cls]
        m = len(ids)
        def cut(fraction):  # the same tolerance as ours: 0.35 + 0.1 + 0.2 < 0.65 in binary
            return int(np.floor(m * fraction + 1e-9))

        a, b = cut(head), cut(head + spec["valid"])
        t = cut(head + spec["valid"] + spec["test"])
        for i, ev in enumerate(ids):
            time_split[ev] = "valid" if a <= i < b else "test" if b <= i < t else "train"
    random_split = {}
    for ev in classes:
        u = (keyed_hash(seed, ev) >> 11) / float(1 << 53)
        random_split[ev] = "test" if u < spec["test"] else "valid" if u < spec["test"] + spec["valid"] else "train"
    json.dump({"classes": classes, "time": time_split, "random": random_split}, open(out_path, "w"))


def cmd_multiclass(truth_path, pred_path, k, out_path):
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix

    t = read(truth_path).astype(int)
    p = read(pred_path).astype(int)
    labels = list(range(int(k)))
    json.dump({
        "balanced_accuracy": balanced_accuracy_score(t, p),
        "normalized": confusion_matrix(t, p, labels=labels, normalize="true").tolist(),
    }, open(out_path, "w"))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {
        "torchscript": cmd_torchscript,
        "native-logits": cmd_native_logits,
        "sklearn-forest": cmd_sklearn_forest,
        "bench-cnn": cmd_bench_cnn,
        "bench-forest": cmd_bench_forest,
        "dset": cmd_dset,
        "conv1d": cmd_conv1d,
        "conv1d-logits": cmd_conv1d_logits,
        "bench-conv1d": cmd_bench_conv1d,
        "ttf-labels": cmd_ttf_labels,
        "multiclass": cmd_multiclass,
    }[cmd](*args)
