"""`make bench`: every figure measured in this one run on the shared dataset, printed as
one JSON object on stdout (progress goes to stderr).

It starts its own Prefect and MLflow servers (so the flow processes it measures are not
the servers) and a fresh MASKCLS_HOME, then runs its parts, in this order:

- ``train``: cold and warm `maskcls train` (default profile) as fresh processes, the warm run's
  breakdown (startup, imports, server wait, flow, exit), a warm run that starts its own
  temporary Prefect server, and `maskcls --help`;
- ``seed``: `maskcls train --profile seed`, its peak RSS from wait4 (the process alone);
- ``speed``: the pipeline's training and the article's naive `model.fit` on the same model
  and images (the seed run's split), in alternating timed rounds of their own processes
  (benchmarks/speed_round.py: pipeline, naive, named variants, again, ...; the median of
  the paired ratios and their spread), each side's test accuracy after the same number of
  samples, and the achieved GFLOP/s against a large matmul's (benchmarks/peak_flops.py);
- ``predict``: predictions per second with the champion, from image files on disk;
- ``scan``: benchmarks/scan.py's report (the report scenes and collages) with the champion
  as classifier; its JSON is merged with every top-level key prefixed ``scan_``.
- ``origins`` (only as ``PART=origins``): for every origin family (maskcls/origins.py) of at
  least 50 images, the default profile trained without it (``data.holdout_family``) for
  ``--origins-epochs`` epochs, and the recall of its class on it: ``origin_recall_<family>``.
- ``three-class`` (only as ``PART=three-class``): `maskcls train --profile three-class` on its
  own sources (``MASKCLS_SHARED_DATASETS``, by default ``../shared/datasets`` beside the
  checkout): macro recall, each class's recall (``mask_weared_incorrect`` among them).
- ``scale`` (only as ``PART=scale``): benchmarks/scale.py in its own process (its progress on
  this stderr): the data stages' seconds per 1,000 images on synthetic sets of 1x-64x the
  shared data, the work redone when 1% new images join the 16x set, the plot in
  docs/scaling.png; its JSON is merged with every top-level key prefixed ``scale_``.

``seed`` runs the seed profile twice: on the leak-free split (``seed_*``) and under the
article's protocol (``seed_article_protocol_*``: by file, duplicates kept, validation after
augmentation), with the article's own figures beside them (``seed_article_reported``).

``--part NAME`` (``make bench PART=NAME``) runs one part, after the parts it needs (``speed``
after ``seed``; ``predict`` and ``scan`` after ``train``, whose model is the champion);
their figures are printed too. Each part that ran gives ``<part>_wall_s``, ``bench_s`` the
whole run, and ``targets`` every target whose figures were measured.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

if TYPE_CHECKING:
    from maskcls.config import Settings

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets" / "face-mask"
# `python -m flows.cli` from the checkout (cwd=REPO): the same CLI as the `maskcls` script, also in a
# venv where the project's entry point is not installed (a worktree sharing another checkout's venv).
TRAIN = [sys.executable, "-m", "flows.cli", "train", "--json"]
SIDES = ("train", "val", "test")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


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


@dataclass
class Bench:
    """What the parts share: the environment of the processes they time, a scratch folder, and
    the output a part leaves for the parts after it."""

    env: dict[str, str]
    work: Path
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: The command line's part options (origins_profile, origins_epochs).
    options: dict[str, Any] = field(default_factory=dict)

    def settings(self) -> Settings:
        """The bench processes' settings (its MASKCLS_HOME and MLflow server), for calls made here."""
        from maskcls.config import Settings

        return Settings.from_env(self.env)


# --- the parts ----------------------------------------------------------------------------


def train(bench: Bench) -> dict[str, Any]:
    log("cold run, default profile (fresh process, empty cache)")
    cold_s, _, out = timed_process(TRAIN, bench.env)
    default = last_json(out)
    log(f"cold run: {cold_s:.0f}s, test_accuracy {default['metrics']['test_accuracy']:.4f}")
    log("warm run, default profile (same inputs)")
    warm_s, _, out = timed_process(TRAIN, bench.env)
    warm = last_json(out)
    assert warm["cache_hit"], warm["stages"]
    log(f"warm run: {warm_s:.1f}s, stages {set(warm['stages'].values())}, {warm['timings']}")
    log("warm run again with no PREFECT_API_URL: the CLI starts (and stops) a temporary Prefect server")
    own_env = {k: v for k, v in bench.env.items() if k not in ("PREFECT_API_URL", "PREFECT_HOME")}
    own_s, _, out = timed_process(TRAIN, own_env)
    own = last_json(out)
    assert own["cache_hit"], own["stages"]
    log(f"warm run, temporary server: {own_s:.1f}s, {own['timings']}")
    help_s = min(timed_process([sys.executable, "-m", "flows.cli", "--help"], bench.env)[0] for _ in range(3))
    log(f"maskcls --help: {help_s:.2f}s (best of 3)")
    counts = default["counts"]
    return {
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
        # Calibration (the temperature fitted on validation) and each class's recall.
        **{k: v for k, v in default["metrics"].items()
           if k.startswith("test_recall_") or k in ("test_ece", "test_ece_uncalibrated", "temperature")},
        "cold_run_s": cold_s,
        "warm_run_s": warm_s,
        # Inside the warm run's process (flows/cli.py: _timings); the rest of warm_run_s is the exit.
        "warm_run_breakdown": {**warm["timings"], "exit_s": warm_s - sum(warm["timings"].values())},
        "warm_run_temporary_server_s": own_s,
        "warm_run_temporary_server_breakdown": {**own["timings"],
                                                "exit_s": own_s - sum(own["timings"].values())},
        "help_s": help_s,
    }


#: The 2020 article's reported figures (its own split: by file, duplicates kept, validation after augmentation).
ARTICLE_FIGURES = {"train_accuracy": 0.9994, "test_accuracy": 0.9645, "test_recall_with_mask": 0.95,
                   "test_recall_without_mask": 0.98}


def seed_figures(bench: Bench, result: dict[str, Any], prefix: str) -> dict[str, Any]:
    """A seed run's test accuracy and per-class recall, and its last epoch's training and validation
    accuracy (Keras' running accuracy over the epoch, the figure the article reports as train accuracy)."""
    from tasks import tracking

    history = tracking.run_artifact_json(tracking.configure(bench.settings()), result["mlflow_run_id"],
                                         "history.json")["history"]
    metrics = result["metrics"]
    return {
        f"{prefix}_test_accuracy": metrics["test_accuracy"],
        f"{prefix}_train_accuracy": history["accuracy"][-1],
        f"{prefix}_val_accuracy": history["val_accuracy"][-1] if "val_accuracy" in history else None,
        **{f"{prefix}_{k}": v for k, v in metrics.items() if k.startswith("test_recall_")},
    }


def seed(bench: Bench) -> dict[str, Any]:
    log("seed profile run, leak-free split (peak RSS of the flow process)")
    seed_s, seed_rss, out = timed_process(TRAIN + ["--profile", "seed"], bench.env)
    result = bench.outputs["seed"] = last_json(out)
    log(f"seed run: {seed_s:.0f}s, test_accuracy {result['metrics']['test_accuracy']:.4f}, {seed_rss:.0f} MB")
    log("seed profile run, the article's protocol (data.protocol=article: registers nothing)")
    article_s, _, out = timed_process(TRAIN + ["--profile", "seed", "--set", "data.protocol=article"], bench.env)
    article = last_json(out)
    assert article["model_version"] is None, article["promotion"]
    log(f"article-protocol run: {article_s:.0f}s, test_accuracy {article['metrics']['test_accuracy']:.4f}")
    return {
        **seed_figures(bench, result, "seed"),
        **seed_figures(bench, article, "seed_article_protocol"),
        "seed_article_reported": ARTICLE_FIGURES,
        "peak_rss_mb": seed_rss,
        "seed_run_s": seed_s,
        "seed_article_protocol_run_s": article_s,
    }


def origins(bench: Bench) -> dict[str, Any]:
    """For every origin family of at least ORIGIN_MIN_IMAGES kept images: train without it, test on it."""
    from maskcls.config import load_config
    from maskcls.data import validate
    from maskcls.origins import family_of

    profile, epochs = bench.options["origins_profile"], bench.options["origins_epochs"]
    config = load_config(profile)
    data_used = (f"a class-balanced subset of {config.data.max_images} images (data.max_images)"
                 if config.data.max_images else "all of the data (no subset)")
    manifest = validate(SHARED, config.data)
    sizes: dict[str, int] = {}
    for item in manifest.items:
        if (family := family_of(item.path)) is not None:
            sizes[family] = sizes.get(family, 0) + 1
    families = sorted(f for f, n in sizes.items() if n >= ORIGIN_MIN_IMAGES)
    out: dict[str, Any] = {}
    runs: dict[str, Any] = {}
    for family in families:
        log(f"holding out {family} ({sizes[family]} images): profile {profile}, {epochs} epochs")
        argv = TRAIN + ["--profile", profile, "--set", f"data.holdout_family={family}",
                        "--set", f"train.epochs={epochs}"]
        run_s, _, text = timed_process(argv, bench.env)
        result = last_json(text)
        test = result["counts"]["test"]
        label = max(test, key=test.get)  # each family is one class
        recall = result["metrics"][f"test_recall_{label}"]
        out[f"origin_recall_{family}"] = recall
        runs[family] = {"class": label, "kept_images": sizes[family], "test_images": sum(test.values()),
                        "train_images": sum(result["counts"]["train"].values()),
                        "val_images": sum(result["counts"]["val"].values()),
                        "recall": recall, "run_s": run_s, "mlflow_run_id": result["mlflow_run_id"]}
        log(f"{family}: recall of {label} {recall:.4f} on {sum(test.values())} images, {run_s:.0f}s")
    return {
        **out,
        "origins_runs": runs,
        "origins_settings": {
            "profile": profile,
            "epochs": epochs,
            "reduced_epochs": epochs != config.train.epochs,
            "why": f"{len(families)} runs must fit in 40 minutes on this 2-core machine: each trains the "
                   f"{profile} profile for {epochs} epochs (its own: {config.train.epochs}) on every other "
                   f"family, {data_used}, and tests on the held-out family alone",
            "families_below_min": sorted(f for f, n in sizes.items() if n < ORIGIN_MIN_IMAGES),
            "min_images": ORIGIN_MIN_IMAGES,
        },
    }


def three_class(bench: Bench) -> dict[str, Any]:
    """The three-class profile on its own source list (face-mask, tune-scene faces, incorrect masks)."""
    log("three-class profile run (its own sources under MASKCLS_SHARED_DATASETS)")
    run_s, _, out = timed_process(TRAIN + ["--profile", "three-class"], bench.env)
    result = last_json(out)
    metrics = result["metrics"]
    log(f"three-class run: {run_s:.0f}s, macro recall {metrics['test_recall']:.4f}, "
        f"incorrect-mask recall {metrics.get('test_recall_mask_weared_incorrect', float('nan')):.4f}")
    return {
        "three_class_test_accuracy": metrics["test_accuracy"],
        "three_class_macro_recall": metrics["test_recall"],
        **{f"three_class_{k}": v for k, v in metrics.items() if k.startswith("test_recall_") or k == "test_ece"},
        "three_class_counts": result["counts"],
        "three_class_registered_model": result.get("registered_model"),
        "three_class_run_s": run_s,
    }


def scale(bench: Bench) -> dict[str, Any]:
    """benchmarks/scale.py's report, keys prefixed ``scale_`` (it streams its progress to this stderr)."""
    log(f"scale: synthetic sets of {bench.options['scale_sizes']} x the shared data (own process)")
    argv = [sys.executable, "-m", "benchmarks.scale", "--sizes", bench.options["scale_sizes"],
            "--plot", str(REPO / "docs" / "scaling.png")]
    if bench.options.get("scale_limit"):
        argv += ["--limit", str(bench.options["scale_limit"])]
    out = subprocess.run(argv, env=bench.env, cwd=REPO, stdout=subprocess.PIPE, text=True, check=True).stdout
    return {f"scale_{key}": value for key, value in last_json(out).items()}


#: The rows of the speed comparison: speed_round.py's options for each (the seed model, float32,
#: batch 16, unless the row's name says otherwise). Every row but naive is the pipeline's input path.
SPEED_ROWS: dict[str, list[str]] = {
    "pipeline": [],
    "naive": ["--side", "naive"],
    # A named setting, not a silent change: 4x the batch, 4x the learning rate (linear scaling).
    "pipeline_batch64_lr4x": ["--batch", "64", "--lr-scale", "4"],
    "pipeline_bf16": ["--precision", "mixed_bfloat16"],
}
#: Rows whose accuracy after the same number of samples is measured too (bf16 is only timed).
ACCURACY_ROWS = ("pipeline", "naive", "pipeline_batch64_lr4x")
#: Timed rounds per row (alternating: A B C D A B C D ...), samples per round, and warm-up samples.
SPEED_ROUNDS, ROUND_SAMPLES, WARMUP_SAMPLES = 3, 16384, 2048


def row_batch(row: str) -> int:
    argv = SPEED_ROWS[row]
    return int(argv[argv.index("--batch") + 1]) if "--batch" in argv else 16


def speed(bench: Bench) -> dict[str, Any]:
    """Rows of speed_round.py in alternating rounds (median ratio to naive, with its spread), the
    same number of samples trained by each accuracy row, achieved GFLOP/s against a measured peak."""
    import numpy as np

    from benchmarks.speed_round import NAIVE_VALIDATION
    from maskcls.augment import augment_labels

    dest = bench.work / "arrays"
    images = export_arrays(bench, dest, bench.outputs["seed"]["mlflow_run_id"])
    train_args = array_args(dest, ("train",))
    peaks = [last_json(timed_process([sys.executable, "-m", "benchmarks.peak_flops"], bench.env)[2])]
    rounds: dict[str, list[float]] = {row: [] for row in SPEED_ROWS}
    flops = 0
    for n in range(SPEED_ROUNDS):
        for row, argv in SPEED_ROWS.items():
            batch = row_batch(row)
            _, _, out = timed_process([sys.executable, "-m", "benchmarks.speed_round", *train_args, *argv, "--flops",
                                       "--steps", str(ROUND_SAMPLES // batch),
                                       "--warmup", str(WARMUP_SAMPLES // batch)], bench.env)
            result = last_json(out)
            rounds[row].append(result["samples_per_s"])
            flops = result["train_flops_per_sample"]
            log(f"round {n + 1}/{SPEED_ROUNDS} {row}: {result['samples_per_s']:.0f} samples/s")
    peaks.append(last_json(timed_process([sys.executable, "-m", "benchmarks.peak_flops"], bench.env)[2]))
    peak = max(p["peak_gflops"] for p in peaks)
    # The same number of samples for every accuracy row: about one epoch of the naive side.
    n_aug = len(augment_labels(np.load(dest / "y_train.npy")))
    unit = 64 * 32  # a whole number of steps at batch 64 and of executions of 32 steps
    samples = (n_aug - int(n_aug * NAIVE_VALIDATION)) // unit * unit
    accuracy: dict[str, float] = {}
    naive_rss = 0.0
    for row in ACCURACY_ROWS:
        log(f"{row}: {samples} samples, then the test side")
        _, rss, out = timed_process([sys.executable, "-m", "benchmarks.speed_round", *train_args, *SPEED_ROWS[row],
                                     *array_args(dest, ("test",)), "--warmup", "0",
                                     "--steps", str(samples // row_batch(row))], bench.env)
        accuracy[row] = last_json(out)["test_accuracy"]
        if row == "naive":
            naive_rss = rss
        log(f"{row}: test accuracy {accuracy[row]:.4f}")
    median = {row: float(np.median(v)) for row, v in rounds.items()}
    # Paired ratios: each round's row against the naive round beside it (same window of the machine).
    ratios = {row: [a / b for a, b in zip(v, rounds["naive"])] for row, v in rounds.items() if row != "naive"}
    rows = {row: {
        "samples_per_s_rounds": rounds[row],
        "samples_per_s_median": median[row],
        **({"speedup_median": float(np.median(ratios[row])),
            "speedup_spread": [min(ratios[row]), max(ratios[row])]} if row in ratios else {}),
        "gflops": median[row] * flops / 1e9,
        "share_of_peak": median[row] * flops / 1e9 / peak,
        **({"test_accuracy_same_samples": accuracy[row]} if row in accuracy else {}),
    } for row in SPEED_ROWS}
    equal = [row for row in ACCURACY_ROWS if row != "naive" and accuracy[row] >= accuracy["naive"] - 0.005]
    return {
        "train_samples_per_s": median["pipeline"],
        "naive_train_samples_per_s": median["naive"],
        "train_speedup": rows["pipeline"]["speedup_median"],
        "train_speedup_spread": rows["pipeline"]["speedup_spread"],
        # The fastest row whose accuracy after the same samples is within 0.5 points of naive, or better.
        "best_speedup_at_equal_accuracy": max((rows[r]["speedup_median"] for r in equal), default=None),
        "best_row_at_equal_accuracy": max(equal, key=lambda r: rows[r]["speedup_median"], default=None),
        "speed_rows": rows,
        "speed_round_samples": ROUND_SAMPLES,
        "accuracy_samples": samples,
        "pipeline_test_accuracy_same_samples": accuracy["pipeline"],
        "naive_test_accuracy_same_samples": accuracy["naive"],
        "train_flops_per_sample": flops,
        "train_gflops": rows["pipeline"]["gflops"],
        "peak_gflops": peak,
        "peak_gflops_measured": [p["peak_gflops"] for p in peaks],
        "train_share_of_peak": rows["pipeline"]["share_of_peak"],
        "throughput_settings_that_differ": {
            "steps_per_execution": {"pipeline": 32, "naive": 1},
            "input": {"pipeline": "uint8 memmap, batches gathered and scaled to float32 in tf.data",
                      "naive": "whole augmented set as float32 numpy in memory"},
            "validation": {"pipeline": f"not in the timed steps (the flow's: held-out clusters, {images['val']} "
                                       "images)", "naive": "validation_split=0.2, after the timed steps"},
            "same": "model (seed profile), batch 16 (but the batch64 row), Adam 1e-5 (x4 in that row), images, seed",
        },
        "naive_peak_rss_mb": naive_rss,
    }


def predict(bench: Bench) -> dict[str, Any]:
    rate = measure_predict(bench.settings())
    log(f"predict: {rate:.0f} images/s")
    return {"predict_images_per_s": rate}


def scan(bench: Bench) -> dict[str, Any]:
    from flows.scan_cli import DEFAULT_MODEL

    log("scan report (report scenes and collages, the scanner champion's classifier; own process)")
    _, _, out = timed_process([sys.executable, "-m", "benchmarks.scan", "--model", DEFAULT_MODEL], bench.env)
    return {f"scan_{key}": value for key, value in last_json(out).items()}


@dataclass(frozen=True)
class Part:
    run: Callable[[Bench], dict[str, Any]]
    # Parts that must run first (for their output, or the champion they register); earlier in PARTS.
    needs: tuple[str, ...] = ()


PartName = Literal["train", "seed", "speed", "predict", "scan", "origins", "three-class", "scale"]
#: Every part, in the order the whole bench runs them.
PARTS: dict[PartName, Part] = {
    "train": Part(train),
    "seed": Part(seed),
    "speed": Part(speed, needs=("seed",)),
    "predict": Part(predict, needs=("train",)),
    "scan": Part(scan, needs=("train",)),
    # Not in the default run (about 40 minutes of its own): `make bench PART=origins`.
    "origins": Part(origins),
    "three-class": Part(three_class),
    "scale": Part(scale),
}
#: Parts only run when asked for by name.
ON_REQUEST: tuple[str, ...] = ("origins", "three-class", "scale")
#: A family with fewer kept images is not held out (too few to measure a recall).
ORIGIN_MIN_IMAGES = 50
#: Epochs of the held-out-family runs: 8 families x (2 epochs + preprocessing) fit in 40 minutes.
ORIGINS_EPOCHS = 2


def plan(part: PartName | None) -> list[PartName]:
    """The parts to run, in order: all of them, or ``part`` after the parts it needs."""
    if part is None:
        return [name for name in PARTS if name not in ON_REQUEST]
    wanted = {part}
    for name in reversed(PARTS):  # a part's needs come before it, so one backward pass collects them all
        if name in wanted:
            wanted.update(PARTS[name].needs)
    return [name for name in PARTS if name in wanted]


TARGETS: dict[str, tuple[tuple[str, ...], Callable[[dict[str, Any]], bool]]] = {
    "test_accuracy>=0.98": (("test_accuracy",), lambda r: r["test_accuracy"] >= 0.98),
    "per_class_recall>=0.97": (("test_recall_with_mask", "test_recall_without_mask"),
                               lambda r: min(r["test_recall_with_mask"], r["test_recall_without_mask"]) >= 0.97),
    "test_ece<=0.03": (("test_ece",), lambda r: r["test_ece"] <= 0.03),
    # seed_test_accuracy and seed_article_protocol_test_accuracy are reported beside the article's
    # 96.45%, not targets: the article's figure came from a leaky split.
    "three_class_macro_recall>=0.90": (("three_class_macro_recall",), lambda r: r["three_class_macro_recall"] >= 0.90),
    "three_class_incorrect_recall>=0.85": (("three_class_test_recall_mask_weared_incorrect",),
                                           lambda r: r["three_class_test_recall_mask_weared_incorrect"] >= 0.85),
    "three-class<=40min": (("three-class_wall_s",), lambda r: r["three-class_wall_s"] <= 2400),
    # Median of the paired alternating rounds, at batch 16 and at the best row of equal accuracy.
    "throughput>=2.0x_naive": (("train_speedup",), lambda r: r["train_speedup"] >= 2.0),
    "throughput>=2.0x_naive_at_equal_accuracy": (
        ("best_speedup_at_equal_accuracy",),
        lambda r: (r["best_speedup_at_equal_accuracy"] or 0) >= 2.0),
    "accuracy_within_0.5_points_or_better": (
        ("pipeline_test_accuracy_same_samples", "naive_test_accuracy_same_samples"),
        lambda r: r["pipeline_test_accuracy_same_samples"] >= r["naive_test_accuracy_same_samples"] - 0.005),
    "peak_rss<=0.4x_naive": (("peak_rss_mb", "naive_peak_rss_mb"),
                             lambda r: r["peak_rss_mb"] <= 0.4 * r["naive_peak_rss_mb"]),
    "warm<=8s": (("warm_run_s",), lambda r: r["warm_run_s"] <= 8),
    "help<=1.5s": (("help_s",), lambda r: r["help_s"] <= 1.5),
    "cold<=15min": (("cold_run_s",), lambda r: r["cold_run_s"] <= 900),
    "predict>=300/s": (("predict_images_per_s",), lambda r: r["predict_images_per_s"] >= 300),
    # The 45 minutes are for the whole bench: checked only when every part ran.
    "bench<=45min": (("bench_s", *(f"{name}_wall_s" for name in PARTS if name not in ON_REQUEST)),
                     lambda r: r["bench_s"] <= 2700),
    "origins<=40min": (("origins_wall_s",), lambda r: r["origins_wall_s"] <= 2400),
    "origin_recall>=0.95": (("origins_runs",),
                            lambda r: all(run["recall"] >= 0.95 for run in r["origins_runs"].values())),
    # Issue 10: data stages near-linear, clustering fast, a small addition cheap.
    "scale_data_stages_64x<=1.3x_1x": (("scale_data_stages_ratio_64x",),
                                       lambda r: r["scale_data_stages_ratio_64x"] <= 1.3),
    "scale_cluster_64x<=60s": (("scale_cluster_s_64x",), lambda r: r["scale_cluster_s_64x"] <= 60),
    "scale_1%_new_redo<=10%": (("scale_redo_share_16x",), lambda r: r["scale_redo_share_16x"] <= 0.10),
    "scale<=40min": (("scale_wall_s",), lambda r: r["scale_wall_s"] <= 2400),
}


def targets(result: dict[str, Any]) -> dict[str, bool]:
    """Each target whose figures ``result`` holds: met or not."""
    return {name: check(result) for name, (keys, check) in TARGETS.items() if all(k in result for k in keys)}


# --- helpers of the parts ---------------------------------------------------------------------


@contextmanager
def servers(root: Path) -> Iterator[tuple[str, str]]:
    """Prefect's and MLflow's servers under ``root`` on free ports, both healthy: (Prefect API URL,
    MLflow URL). Stopped on the way out, MLflow first (Prefect outlives the runs it tracks)."""
    import stack

    with ExitStack() as on_exit:
        prefect = stack.start_prefect_server(root, stack.free_port())
        on_exit.callback(prefect.stop)
        mlflow_server = stack.start_mlflow_server(root, stack.free_port())
        on_exit.callback(mlflow_server.stop)
        for service in (prefect, mlflow_server):
            assert service.url and service.health_url
            stack.wait_healthy(service.health_url, 180, service)
        yield f"{prefect.url}/api", mlflow_server.url


def array_args(folder: Path, sides: tuple[str, ...]) -> list[str]:
    """benchmarks/pipeline_fit.py's and naive.py's options for the arrays export_arrays wrote."""
    return [arg for side in sides for arg in (f"--x-{side}", str(folder / f"x_{side}.npy"),
                                              f"--y-{side}", str(folder / f"y_{side}.npy"))]


def export_arrays(bench: Bench, dest: Path, run_id: str) -> dict[str, int]:
    """The seed run's preprocessed (un-augmented) arrays as plain .npy files in ``dest``
    (x_<side>.npy, y_<side>.npy); returns the images per side."""
    import numpy as np

    from maskcls.config import load_config
    from maskcls.data import labels_of, validate
    from maskcls.data import split as do_split
    from maskcls.preprocess import preprocess_files
    from tasks import tracking

    dest.mkdir(parents=True, exist_ok=True)
    split = tracking.run_artifact_json(tracking.configure(bench.settings()), run_id, "split.json")
    # Re-derive the arrays the same way the pipeline does (same config, same code).
    cfg = load_config("seed")
    manifest = validate(SHARED, cfg.data)
    sides = do_split(manifest, cfg.data)
    assert sides.fingerprint == split["fingerprint"], "benchmark split differs from the seed run's"
    images: dict[str, int] = {}
    for side in SIDES:
        items = sides.side(side)
        np.save(dest / f"x_{side}.npy", preprocess_files(SHARED, [i.path for i in items], cfg.preprocess))
        np.save(dest / f"y_{side}.npy", labels_of(items, sides.classes))
        images[side] = len(items)
    return images


def measure_predict(settings: Settings) -> float:
    """Images per second through the champion pyfunc, reading the files from disk."""
    import pandas as pd

    from maskcls.config import CHAMPION_ALIAS, REGISTERED_MODEL_NAME
    from tasks import tracking

    model = tracking.load_model(settings, f"models:/{REGISTERED_MODEL_NAME}@{CHAMPION_ALIAS}")
    files = sorted(p for c in ("with_mask", "without_mask") for p in (SHARED / c).iterdir())[:1000]
    model.predict(pd.DataFrame({"image": [files[0].read_bytes()]}))  # warm-up
    t0 = time.perf_counter()
    for start in range(0, len(files), 256):
        chunk = files[start:start + 256]
        model.predict(pd.DataFrame({"image": [f.read_bytes() for f in chunk]}))
    return len(files) / (time.perf_counter() - t0)


def main(
    part: Annotated[PartName | None, typer.Option(
        help="Run only this part (after the parts it needs); default: every part but origins, three-class and "
        "scale, in order.")] = None,
    origins_profile: Annotated[str, typer.Option(
        help="Profile the origins part trains (smoke: a quick check that it works).")] = "default",
    origins_epochs: Annotated[int, typer.Option(
        help="Epochs of each origins run (reduced from the profile's to fit 40 minutes).")] = ORIGINS_EPOCHS,
    scale_sizes: Annotated[str, typer.Option(
        help="Sizes of the scale part, as multiples of the shared data.")] = "1,4,16,64",
    scale_limit: Annotated[int | None, typer.Option(
        help="Source images of the scale part (a quick check; default: all of the shared data).")] = None,
) -> None:
    """Measure the pipeline on the shared dataset; print one JSON object on stdout."""
    names = plan(part)
    bench_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="maskcls-bench-"))
    try:
        with servers(work / "servers") as (api_url, mlflow_url):
            bench = Bench(env={
                **os.environ,
                "PREFECT_API_URL": api_url,
                "MLFLOW_TRACKING_URI": mlflow_url,
                "MASKCLS_HOME": str(work / "home"),
                "MASKCLS_DATA_SOURCE": str(SHARED),
                "TF_CPP_MIN_LOG_LEVEL": "2",
            }, work=work, options={"origins_profile": origins_profile, "origins_epochs": origins_epochs,
                                   "scale_sizes": scale_sizes, "scale_limit": scale_limit})
            result: dict[str, Any] = {"dataset": str(SHARED), "parts": names}
            for name in names:
                log(f"part {name}")
                start = time.perf_counter()
                result.update(PARTS[name].run(bench))
                result[f"{name}_wall_s"] = time.perf_counter() - start
            result["bench_s"] = time.perf_counter() - bench_start
        result["targets"] = targets(result)
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    typer.run(main)
