"""Export a scikit-learn regression forest to quakelens' forest file (Arrow IPC).

    python export_sklearn_forest.py MODEL.joblib OUT.arrow [--features a,b,c] [--target magnitude]
                                    [--fill FILL.json] [--feature-set study|physical]

One row per node, trees one after another (the layout of each tree's `tree_` arrays):
tree, left, right (-1 at leaves), feature (-1 at leaves), threshold, value (node mean),
cover (weighted_n_node_samples). The feature names become part of the file, so quakelens
feeds the model the same columns in the same order it was trained on.

`--fill` gives the value each input's missing values were replaced with when the model was
trained ({"name": value}, e.g. the study's column means: `X.mean().to_dict()`); quakelens then
fills missing inputs the same way instead of leaving those windows unscored. `--feature-set`
says which definitions the waveform feature columns follow (the study's by default).
"""
import argparse
import json

import numpy as np
import pyarrow as pa

FORMAT = "quakelens-forest"
FORMAT_VERSION = "1"


SUPPORTED = ("RandomForestRegressor", "ExtraTreesRegressor", "DecisionTreeRegressor")


def forest_table(model, features, target="magnitude", fill=None, feature_set="study"):
    """The forest file's table for a fitted RandomForestRegressor/ExtraTreesRegressor/DecisionTreeRegressor."""
    import sklearn

    kind = type(model).__name__
    if kind not in SUPPORTED:
        raise ValueError(f"a {kind} is not a tree regressor; this exports {', '.join(SUPPORTED)}")
    if not hasattr(model, "tree_") and not hasattr(model, "estimators_"):
        raise ValueError(f"the {kind} is not fitted")
    estimators = getattr(model, "estimators_", None) or [model]
    n_features = getattr(model, "n_features_in_", None)
    if n_features is not None and n_features != len(features):
        raise ValueError(f"model takes {n_features} features, {len(features)} names given")
    cols = {k: [] for k in ("tree", "left", "right", "feature", "threshold", "value", "cover")}
    for t, est in enumerate(estimators):
        tr = est.tree_
        if tr.n_outputs != 1 or tr.value.shape[2] != 1:
            raise ValueError("only single-output regression trees can be exported")
        leaf = tr.children_left == -1
        cols["tree"].append(np.full(tr.node_count, t, dtype=np.uint32))
        cols["left"].append(np.where(leaf, -1, tr.children_left).astype(np.int32))
        cols["right"].append(np.where(leaf, -1, tr.children_right).astype(np.int32))
        cols["feature"].append(np.where(leaf, -1, tr.feature).astype(np.int32))
        cols["threshold"].append(tr.threshold.astype(np.float64))
        cols["value"].append(tr.value[:, 0, 0].astype(np.float64))
        cols["cover"].append(tr.weighted_n_node_samples.astype(np.float64))
    spec = {"features": list(features), "target": target, "origin": f"scikit-learn {sklearn.__version__}"}
    if any(f.startswith("f") and "_c" in f for f in features):
        spec["feature_set"] = feature_set
    if fill is not None:
        unknown = sorted(set(fill) - set(features))
        lacking = [f for f in features if f not in fill]
        if unknown or lacking:
            raise ValueError(f"fill values: not inputs {unknown}, inputs without a value {lacking}")
        values = [float(fill[f]) for f in features]
        if not all(np.isfinite(values)):
            raise ValueError("every fill value must be a finite number")
        spec["fill"] = values
    schema = pa.schema(
        [
            ("tree", pa.uint32()),
            ("left", pa.int32()),
            ("right", pa.int32()),
            ("feature", pa.int32()),
            ("threshold", pa.float64()),
            ("value", pa.float64()),
            ("cover", pa.float64()),
        ],
        metadata={
            "quakelens.format": FORMAT,
            "quakelens.format_version": FORMAT_VERSION,
            "quakelens.spec": json.dumps(spec),
        },
    )
    arrays = [pa.array(np.concatenate(cols[f.name]), type=f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def export_forest(model, path, features, target="magnitude", fill=None, feature_set="study"):
    table = forest_table(model, features, target, fill, feature_set)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="a joblib/pickle file holding the fitted forest")
    ap.add_argument("out", help="forest file to write (.arrow)")
    ap.add_argument("--features", help="comma-separated input names (default: the model's feature_names_in_)")
    ap.add_argument("--target", default="magnitude")
    ap.add_argument("--fill", help='JSON {"input": value} of the values missing inputs were filled with')
    ap.add_argument("--feature-set", default="study", choices=["study", "physical"])
    args = ap.parse_args()
    import joblib

    model = joblib.load(args.model)
    if args.features:
        features = args.features.split(",")
    elif hasattr(model, "feature_names_in_"):
        features = list(model.feature_names_in_)
    else:
        ap.error("the model has no feature_names_in_: pass --features")
    fill = json.load(open(args.fill)) if args.fill else None
    try:
        export_forest(model, args.out, features, args.target, fill, args.feature_set)
    except ValueError as e:
        raise SystemExit(f"{args.model}: {e}")


if __name__ == "__main__":
    main()
