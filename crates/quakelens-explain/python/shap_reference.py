"""The shap reference for quakelens' explanations (parity tests and benchmarks).

Commands (raw little-endian f64 files):
  tree-shap OUT.arrow X SHAP BASE ROWS FEATURES TREES SEED MAX_DEPTH
      fit a scikit-learn RandomForestRegressor (MAX_DEPTH 0 = unlimited), export it with
      export_sklearn_forest.py, and write test rows X, shap.TreeExplainer's values and
      expected_value for them.
  tree-interactions OUT.arrow X INTER BASE ROWS FEATURES TREES SEED MAX_DEPTH
      as tree-shap, writing shap.TreeExplainer's shap_interaction_values (rows × F × F).
  bench-tree FOREST_X FOREST_Y ROWS FEATURES TREES EXPLAIN_ROWS OUT.arrow X SHAP
      fit on the given data, export, time shap.TreeExplainer on EXPLAIN_ROWS rows (JSON on
      stdout), write those rows to X and shap's values to SHAP.
  bench-image MODEL.safetensors X N MAX_EVALS THREADS
      time shap.Explainer(f, shap.maskers.Image("inpaint_telea", (33, 153, 3))) (the Partition
      explainer) at MAX_EVALS on N images (f = the aftershock-minus-foreshock logit of our CNN
      file loaded into PyTorch); JSON on stdout.
  inpaint IMAGES MASKS OUT N H W RADIUS
      cv2.inpaint(image, mask, RADIUS, cv2.INPAINT_TELEA) on N raw u8 images (H × W × 3) and
      masks (H × W, nonzero = fill), as shap's Image("inpaint_telea") masker calls it; writes
      the N results (u8).
  image-masker IMAGES KEEP OUT N H W
      shap.maskers.Image("inpaint_telea", (H, W, 3)) called as the Partition explainer calls
      it: per image a mask over its H × W × 3 values (KEEP: H × W, nonzero = kept, repeated
      over channels) on the u8 image; writes the masked images (u8).
"""
import json
import sys
import time

import numpy as np


def read(path):
    return np.fromfile(path, dtype="<f8")


def write(path, values):
    np.asarray(values, dtype="<f8").tofile(path)


def fit(X, y, trees, seed, max_depth):
    from sklearn.ensemble import RandomForestRegressor

    depth = None if int(max_depth) == 0 else int(max_depth)
    return RandomForestRegressor(n_estimators=int(trees), max_depth=depth, random_state=int(seed), n_jobs=1).fit(X, y)


def tree_case(out, rows, features, trees, seed, max_depth):
    """Fits and exports a forest; returns it with float32-exact test rows, some at thresholds."""
    from export_sklearn_forest import export_forest

    rng = np.random.default_rng(int(seed))
    rows, features = int(rows), int(features)
    X = rng.normal(size=(rows, features))
    X[:, 0] = np.round(X[:, 0], 1)  # ties, as real features have
    y = X[:, 0] * 2 + np.sin(3 * X[:, 1]) + X[:, 2] * X[:, 3] + 0.3 * rng.normal(size=rows)
    model = fit(X, y, trees, seed, max_depth)
    export_forest(model, out, [f"x{i}" for i in range(features)])
    Xt = rng.normal(size=(rows // 4, features))
    Xt[:, 0] = np.round(Xt[:, 0], 1)
    # Rows on split thresholds, where `<=` decides the path: splits of every tree, each on its
    # own feature at its threshold and either side (6 splits per tree keep shap's time short).
    from models_reference import threshold_probes

    Xt = np.vstack([Xt.astype(np.float32).astype(np.float64), threshold_probes(model, X, per_tree=6)])
    return model, Xt


def cmd_tree_shap(out, x_path, shap_path, base_path, rows, features, trees, seed, max_depth):
    import shap

    model, Xt = tree_case(out, rows, features, trees, seed, max_depth)
    explainer = shap.TreeExplainer(model)
    values = explainer.shap_values(Xt, check_additivity=True)
    write(x_path, Xt.ravel())
    write(shap_path, np.asarray(values).ravel())
    write(base_path, np.atleast_1d(explainer.expected_value))


def cmd_tree_interactions(out, x_path, inter_path, base_path, rows, features, trees, seed, max_depth):
    import shap

    model, Xt = tree_case(out, rows, features, trees, seed, max_depth)
    explainer = shap.TreeExplainer(model)
    values = explainer.shap_interaction_values(Xt)
    write(x_path, Xt.ravel())
    write(inter_path, np.asarray(values).ravel())
    write(base_path, np.atleast_1d(explainer.expected_value))


def cmd_bench_tree(x_path, y_path, rows, features, trees, explain_rows, out, xe_path, shap_path):
    import shap

    from export_sklearn_forest import export_forest

    rows, features, explain_rows = int(rows), int(features), int(explain_rows)
    X = read(x_path).reshape(rows, features)
    y = read(y_path)
    model = fit(X, y, trees, 0, 0)
    export_forest(model, out, [f"f{i}" for i in range(features)])
    Xe = X[:explain_rows].astype(np.float32).astype(np.float64)
    write(xe_path, Xe.ravel())
    explainer = shap.TreeExplainer(model)
    t0 = time.perf_counter()
    values = explainer.shap_values(Xe, check_additivity=False)
    seconds = time.perf_counter() - t0
    write(shap_path, np.asarray(values).ravel())
    depth = max(e.tree_.max_depth for e in model.estimators_)
    print(json.dumps({"seconds": seconds, "rows": explain_rows, "max_depth": int(depth), "shap": shap.__version__}))


def cmd_bench_image(model_path, x_path, n, max_evals, threads):
    import shap
    import torch

    from models_reference import load_native

    torch.set_num_threads(int(threads))
    model, _ = load_native(model_path)
    n = int(n)
    X = read(x_path).reshape(n, 3, 33, 153).transpose(0, 2, 3, 1).astype(np.float32)

    def f(images):
        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).permute(0, 3, 1, 2)
            logits = model(t)
            return (logits[:, 1] - logits[:, 0]).numpy().astype(np.float64)

    masker = shap.maskers.Image("inpaint_telea", (33, 153, 3))
    explainer = shap.Explainer(f, masker)
    # One untimed image first, as on our side: steady-state cost per image.
    explainer(X[:1], max_evals=int(max_evals), batch_size=100, silent=True)
    t0 = time.perf_counter()
    values = explainer(X, max_evals=int(max_evals), batch_size=100, silent=True)
    seconds = time.perf_counter() - t0
    full = f(X)
    additivity = float(np.max(np.abs(values.values.reshape(n, -1).sum(1) + values.base_values.reshape(n, -1)[:, 0] - full)))
    print(json.dumps({"seconds_per_image": seconds / n, "additivity": additivity, "shap": shap.__version__}))


def cmd_inpaint(images_path, masks_path, out_path, n, h, w, radius):
    import cv2

    n, h, w = int(n), int(h), int(w)
    images = np.fromfile(images_path, dtype=np.uint8).reshape(n, h, w, 3)
    masks = np.fromfile(masks_path, dtype=np.uint8).reshape(n, h, w)
    out = np.stack([cv2.inpaint(images[k], masks[k], int(radius), cv2.INPAINT_TELEA) for k in range(n)])
    out.astype(np.uint8).tofile(out_path)


def cmd_image_masker(images_path, keep_path, out_path, n, h, w):
    import shap

    n, h, w = int(n), int(h), int(w)
    images = np.fromfile(images_path, dtype=np.uint8).reshape(n, h, w, 3)
    keep = np.fromfile(keep_path, dtype=np.uint8).reshape(n, h, w) > 0
    masker = shap.maskers.Image("inpaint_telea", (h, w, 3))
    out = []
    for k in range(n):
        mask = np.repeat(keep[k][:, :, None], 3, axis=2).ravel()
        (masked,) = masker(mask, images[k])
        out.append(np.asarray(masked).reshape(h, w, 3))
    np.stack(out).astype(np.uint8).tofile(out_path)


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    {"tree-shap": cmd_tree_shap, "tree-interactions": cmd_tree_interactions, "bench-tree": cmd_bench_tree, "bench-image": cmd_bench_image, "inpaint": cmd_inpaint, "image-masker": cmd_image_masker}[cmd](*args)
