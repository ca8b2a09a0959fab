"""The speed comparison's pieces: FLOPs counted from the layers, one round of each side."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[3]


def test_flops_are_counted_from_the_convolutions_and_dense_layers() -> None:
    import keras

    from benchmarks.speed_round import forward_flops_per_sample, train_flops_per_sample

    model = keras.Sequential([
        keras.Input((6, 6, 2)),
        keras.layers.Conv2D(4, 3),           # 4x4x4 outputs, each 3*3*2 multiply-adds
        keras.layers.MaxPooling2D(2),        # not counted
        keras.layers.Flatten(),              # 16 values
        keras.layers.Dense(5),
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    forward = 2 * (4 * 4 * 4 * 3 * 3 * 2) + 2 * (16 * 5) + 2 * (5 * 1)
    assert forward_flops_per_sample(model) == forward
    assert train_flops_per_sample(model) == 3 * forward


@pytest.mark.parametrize("side", ["pipeline", "naive"])
def test_a_round_times_its_steps_and_scores_the_test_side(side: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for name, n in (("train", 16), ("test", 20)):
        np.save(tmp_path / f"x_{name}.npy", rng.integers(0, 256, (n, 50, 50, 1), dtype=np.uint8))
        np.save(tmp_path / f"y_{name}.npy", rng.integers(0, 2, n))
    # 16 images x 32 variants = 512 samples (naive: 410 after its validation split); 32 + 64 steps of 4
    argv = [sys.executable, "-m", "benchmarks.speed_round", "--side", side, "--batch", "4", "--steps-per-execution",
            "32", "--warmup", "32", "--steps", "64", "--flops"]
    for name in ("train", "test"):
        argv += [f"--x-{name}", str(tmp_path / f"x_{name}.npy"), f"--y-{name}", str(tmp_path / f"y_{name}.npy")]
    out = subprocess.run(argv, check=False, cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["side"] == side and result["batch"] == 4 and result["steps"] == 64
    assert result["steps_per_execution"] == (32 if side == "pipeline" else 1)
    assert result["samples_per_s"] == pytest.approx(64 * 4 / result["timed_s"])
    assert result["trained_samples"] == 96 * 4
    assert 0.0 <= result["test_accuracy"] <= 1.0
    assert result["train_flops_per_sample"] == 3 * result["forward_flops_per_sample"] > 0


def test_a_round_refuses_more_steps_than_samples(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros((2, 50, 50, 1), dtype=np.uint8))
    np.save(tmp_path / "y.npy", np.array([0, 1]))
    out = subprocess.run([sys.executable, "-m", "benchmarks.speed_round", "--x-train", str(tmp_path / "x.npy"),
                          "--y-train", str(tmp_path / "y.npy"), "--side", "naive", "--warmup", "0", "--steps", "8"],
                         check=False, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert "exceed the 52 training samples" in out.stderr
