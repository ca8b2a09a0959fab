"""`make bench`: every figure measured in this one run on the shared dataset, printed as
one JSON object on stdout (progress goes to stderr).

It starts its own Prefect and MLflow servers (so the flow processes it measures are not
the servers) and a fresh MASKCLS_HOME, then:
1. cold and warm `maskcls train` (default profile) as fresh processes;
2. `maskcls train --profile seed`, its peak RSS from wait4 (the process alone);
3. the pipeline's training and the article's naive `model.fit` on the same model and
   images, each in its own process: one warm-up epoch, one measured epoch;
4. predictions per second with the champion, from image files on disk.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets" / "face-mask"
BIN = Path(sys.executable).parent


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed_process(argv: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Run argv; returns (seconds, peak RSS in MB of that process and its waited children, stdout)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, env=env, cwd=REPO, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n{stderr[-4000:]}")
    return seconds, usage.ru_maxrss / 1024, stdout


def last_json(text: str) -> dict[str, Any]:
    return json.loads(text[text.index("{"):])


def main() -> None:
    from stack import start_mlflow_server, start_prefect_server, wait_healthy

    bench_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="maskcls-bench-"))
    pport, mport = free_port(), free_port()
    prefect = start_prefect_server(work / "servers", pport)
    mlflow_srv = start_mlflow_server(work / "servers", mport)
    try:
        wait_healthy(f"http://127.0.0.1:{pport}/api/health", 180)
        wait_healthy(f"http://127.0.0.1:{mport}/health", 180)
        env = {
            **os.environ,
            "PREFECT_API_URL": f"http://127.0.0.1:{pport}/api",
            "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mport}",
            "MASKCLS_HOME": str(work / "home"),
            "MASKCLS_DATA_SOURCE": str(SHARED),
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }
        maskcls = [str(BIN / "maskcls"), "train", "--json"]
        result: dict[str, Any] = {"dataset": str(SHARED)}

        log("cold run, default profile (fresh process, empty cache)")
        cold_s, _, out = timed_process(maskcls, env)
        default = last_json(out)
        log(f"cold run: {cold_s:.0f}s, test_accuracy {default['metrics']['test_accuracy']:.4f}")
        log("warm run, default profile (same inputs)")
        warm_s, _, out = timed_process(maskcls, env)
        warm = last_json(out)
        assert warm["cache_hit"], warm["stages"]
        log(f"warm run: {warm_s:.1f}s, stages {set(warm['stages'].values())}")

        log("seed profile run (peak RSS of the flow process)")
        seed_s, seed_rss, out = timed_process(maskcls + ["--profile", "seed"], env)
        seed = last_json(out)
        log(f"seed run: {seed_s:.0f}s, test_accuracy {seed['metrics']['test_accuracy']:.4f}, {seed_rss:.0f} MB")

        arrays = export_arrays(env, work / "arrays", seed["mlflow_run_id"])
        log("pipeline training, 1 warm-up + 1 measured epoch, seed model (own process)")
        _, _, out = timed_process([sys.executable, str(REPO / "benchmarks" / "pipeline_fit.py"), *arrays["args"]],
                                  env)
        fit = last_json(out)
        log(f"pipeline: {fit['train_samples_per_s']:.0f} samples/s")
        log("naive model.fit(x_float32, y, batch_size=16, validation_split=0.2), same model (own process)")
        naive_args = _drop_val(arrays["args"])
        _, naive_rss, out = timed_process([sys.executable, str(REPO / "benchmarks" / "naive.py"), *naive_args], env)
        naive = last_json(out)
        log(f"naive: {naive['naive_train_samples_per_s']:.0f} samples/s, {naive['naive_peak_rss_mb']:.0f} MB")

        predict_rate = measure_predict(env, default)
        log(f"predict: {predict_rate:.0f} images/s")

        counts = default["counts"]
        result.update({
            "counts": {
                "images_kept": sum(sum(c.values()) for c in counts.values()),
                "train_images": sum(counts["train"].values()),
                "val_images": sum(counts["val"].values()),
                "test_images": sum(counts["test"].values()),
                "train_samples": default["n_train_samples"],
                "per_side": counts,
            },
            "test_accuracy": default["metrics"]["test_accuracy"],
            "test_f1": default["metrics"]["test_f1"],
            "test_roc_auc": default["metrics"]["test_roc_auc"],
            "seed_test_accuracy": seed["metrics"]["test_accuracy"],
            "train_samples_per_s": fit["train_samples_per_s"],
            "naive_train_samples_per_s": naive["naive_train_samples_per_s"],
            "train_speedup": fit["train_samples_per_s"] / naive["naive_train_samples_per_s"],
            "pipeline_test_accuracy_after_2_epochs": fit["pipeline_test_accuracy_after_2_epochs"],
            "naive_test_accuracy_after_2_epochs": naive["naive_test_accuracy_after_2_epochs"],
            "throughput_settings_that_differ": {
                "steps_per_execution": {"pipeline": 32, "naive": 1},
                "input": {"pipeline": "uint8 array, batches gathered and scaled to float32 in tf.data",
                          "naive": "whole augmented set as float32 numpy in memory"},
                "validation": {"pipeline": f"held-out near-duplicate clusters, not augmented "
                                           f"({sum(counts['val'].values())} images)",
                               "naive": "validation_split=0.2: last 20% of the augmented samples"},
                "same": "model (seed profile), batch 16, Adam 1e-5, L2, images, seed",
            },
            "peak_rss_mb": seed_rss,
            "naive_peak_rss_mb": naive["naive_peak_rss_mb"],
            "cold_run_s": cold_s,
            "warm_run_s": warm_s,
            "seed_run_s": seed_s,
            "predict_images_per_s": predict_rate,
        })
        result["targets"] = {
            "test_accuracy>=0.98": result["test_accuracy"] >= 0.98,
            "seed_test_accuracy>=0.9645": result["seed_test_accuracy"] >= 0.9645,
            "throughput>=1.5x_naive": result["train_speedup"] >= 1.5,
            "accuracy_within_0.5_points": abs(result["pipeline_test_accuracy_after_2_epochs"]
                                              - result["naive_test_accuracy_after_2_epochs"]) <= 0.005,
            "peak_rss<=0.5x_naive": seed_rss <= 0.5 * naive["naive_peak_rss_mb"],
            "warm<=30s_and_5%_of_cold": warm_s <= 30 and warm_s <= 0.05 * cold_s,
            "cold<=15min": cold_s <= 900,
            "predict>=300/s": predict_rate >= 300,
        }
        result["bench_s"] = time.perf_counter() - bench_start
        result["targets"]["bench<=45min"] = result["bench_s"] <= 2700
        print(json.dumps(result, indent=2))
    finally:
        prefect.stop()
        mlflow_srv.stop()
        shutil.rmtree(work, ignore_errors=True)


def _drop_val(args: list[str]) -> list[str]:
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
            continue
        if a in ("--x-val", "--y-val"):
            skip = True
            continue
        out.append(a)
    return out


def export_arrays(env: dict[str, str], dest: Path, run_id: str) -> dict[str, Any]:
    """The seed run's preprocessed (un-augmented) arrays, from the store, as plain .npy files."""
    dest.mkdir(parents=True, exist_ok=True)
    from mlflow import MlflowClient

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    local = client.download_artifacts(run_id, "split.json", str(dest))
    split = json.loads(Path(local).read_text())
    # Re-derive the arrays the same way the pipeline does (same config, same code).
    from maskcls.config import load_config
    from maskcls.data import labels_of, split as do_split, validate
    from maskcls.preprocess import preprocess_files
    import numpy as np

    cfg = load_config("seed")
    manifest = validate(SHARED, cfg.data)
    sides = do_split(manifest, cfg.data)
    assert sides.fingerprint == split["fingerprint"], "benchmark split differs from the seed run's"
    args: list[str] = []
    for side in ("train", "val", "test"):
        items = sides.side(side)
        x = preprocess_files(SHARED, [i.path for i in items], cfg.preprocess)
        y = labels_of(items, sides.classes)
        np.save(dest / f"x_{side}.npy", x)
        np.save(dest / f"y_{side}.npy", y)
        args += [f"--x-{side}", str(dest / f"x_{side}.npy"), f"--y-{side}", str(dest / f"y_{side}.npy")]
    return {"args": args}


def measure_predict(env: dict[str, str], default: dict[str, Any]) -> float:
    """Images per second through the champion pyfunc, reading the files from disk."""
    os.environ["MLFLOW_TRACKING_URI"] = env["MLFLOW_TRACKING_URI"]
    import mlflow
    import pandas as pd

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    model = mlflow.pyfunc.load_model("models:/face-mask-classifier@champion")
    files = sorted(p for c in ("with_mask", "without_mask") for p in (SHARED / c).iterdir())[:1000]
    model.predict(pd.DataFrame({"image": [files[0].read_bytes()]}))  # warm-up
    t0 = time.perf_counter()
    for start in range(0, len(files), 256):
        chunk = files[start:start + 256]
        model.predict(pd.DataFrame({"image": [f.read_bytes() for f in chunk]}))
    return len(files) / (time.perf_counter() - t0)


if __name__ == "__main__":
    main()
