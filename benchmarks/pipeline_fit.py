"""The pipeline's training (maskcls.train.train_model, seed profile) on the same images as
benchmarks/naive.py: one warm-up epoch, one measured epoch, then test accuracy. Prints JSON."""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    for name in ("x-train", "y-train", "x-val", "y-val", "x-test", "y-test"):
        ap.add_argument(f"--{name}", required=True)
    ap.add_argument("--shift", type=int, default=None, help="default: the seed profile's augment.shift")
    args = ap.parse_args()
    if args.shift is None:
        from maskcls.config import load_config as _lc

        args.shift = _lc("seed").augment.shift

    from maskcls.augment import augment_labels, augment_to_file
    from maskcls.config import load_config
    from maskcls.model import predict_proba
    from maskcls.train import load_model, train_model

    cfg = load_config("seed", {"train.epochs": 2}).train
    with tempfile.TemporaryDirectory() as tmp:
        xa = Path(tmp) / "x.npy"
        augment_to_file(np.load(args.x_train), args.shift, xa)
        x = np.load(xa, mmap_mode="r")
        y = augment_labels(np.load(args.y_train))
        out = Path(tmp) / "m.keras"
        result = train_model(x, y, np.load(args.x_val), np.load(args.y_val), cfg, 2, out, log=lambda m: None)
        model = load_model(out)
    x_test = np.load(args.x_test).astype(np.float32) / 255.0
    acc = float(np.mean(predict_proba(model, x_test).argmax(1) == np.load(args.y_test)))
    print(json.dumps({
        "train_samples_per_s": len(x) / result["epoch_seconds"][1],
        "pipeline_warmup_epoch_s": result["epoch_seconds"][0],
        "pipeline_epoch_s": result["epoch_seconds"][1],
        "pipeline_fit_samples": int(len(x)),
        "pipeline_test_accuracy_after_2_epochs": acc,
        "pipeline_fit_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


if __name__ == "__main__":
    main()
