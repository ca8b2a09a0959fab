"""The registered champion: loads without Prefect and without pickles, labels raw bytes,
and `maskcls predict` uses it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from maskcls.config import REGISTERED_MODEL_NAME
from tests.support import REPO
from tests.support.data import SHARED

from .conftest import run_cli

pytestmark = pytest.mark.integration

# Runs in a fresh interpreter where `import prefect` fails.
LOAD_WITHOUT_PREFECT = r"""
import builtins, json, sys
real_import = builtins.__import__
def guarded(name, *args, **kwargs):
    if name == "prefect" or name.startswith("prefect."):
        raise ImportError("prefect is not available here")
    return real_import(name, *args, **kwargs)
builtins.__import__ = guarded
try:
    import prefect
    raise SystemExit("prefect imported")
except ImportError:
    pass
import mlflow, pandas as pd
model = mlflow.pyfunc.load_model("models:/face-mask-classifier@champion")
paths = sys.argv[1:]
out = model.predict(pd.DataFrame({"image": [open(p, "rb").read() for p in paths]}))
print(json.dumps({"rows": out.to_dict(orient="records"),
                  "prefect_loaded": any(m == "prefect" or m.startswith("prefect.") for m in sys.modules)}))
"""


def _some_images(n: int = 3) -> list[Path]:
    return [sorted((SHARED / c).iterdir())[-k] for c in ("with_mask", "without_mask") for k in range(1, n + 1)]


def test_champion_loads_without_prefect_and_labels_bytes(first_run, servers, tmp_path):
    images = _some_images()
    out = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_PREFECT, *map(str, images)],
                         env={**os.environ, "PYTHONPATH": ""}, cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["prefect_loaded"] is False
    assert len(result["rows"]) == len(images)
    for row in result["rows"]:
        assert row["label"] in {"with_mask", "without_mask"}
        assert 0.5 <= row["probability"] <= 1.0  # the probability of the returned label


def test_model_folder_holds_no_pickle_and_has_signature(first_run, mlflow_client, tmp_path):
    import mlflow

    mv = mlflow_client.get_model_version_by_alias(REGISTERED_MODEL_NAME, "champion")
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{REGISTERED_MODEL_NAME}/{mv.version}",
                                                     dst_path=str(tmp_path)))
    files = [p for p in local.rglob("*") if p.is_file()]
    assert files
    for f in files:
        assert f.suffix not in {".pkl", ".pickle", ".cloudpickle"}, f
        head = f.read_bytes()[:2]
        assert head not in (b"\x80\x04", b"\x80\x05", b"\x80\x03"), f"{f} looks like a pickle"
    mlmodel = (local / "MLmodel").read_text()
    assert "signature" in mlmodel and "image" in mlmodel and "probability" in mlmodel
    assert any(f.name == "model.keras" for f in files)
    assert any(f.name == "preprocessing.json" for f in files)
    assert any(f.name.startswith("input_example") for f in files)
    settings = json.loads(next(f for f in files if f.name == "preprocessing.json").read_text())
    assert settings["classes"] == ["with_mask", "without_mask"]
    assert settings["preprocess"] == {"size": 50, "color_mode": "grayscale", "face_crop": False, "face_margin": 0.15}
    assert settings["inference"] == {"tta_flip": False}
    # the calibration fitted by the version's own run's evaluation
    run = mlflow_client.get_run(mv.run_id)
    assert settings["temperature"] == pytest.approx(run.data.metrics["temperature"])


def test_champion_probabilities_are_the_keras_output_at_the_stored_temperature(first_run, mlflow_client, tmp_path):
    """The pyfunc's probability is the model's sigmoid with its logit divided by the stored
    temperature, computed here from the model's own files without maskcls.inference."""
    import keras
    import mlflow
    import numpy as np
    import pandas as pd

    from maskcls.config import PreprocessConfig
    from maskcls.preprocess import preprocess_bytes

    mv = mlflow_client.get_model_version_by_alias(REGISTERED_MODEL_NAME, "champion")
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{REGISTERED_MODEL_NAME}/{mv.version}",
                                                     dst_path=str(tmp_path)))
    settings = json.loads((local / "artifacts" / "preprocessing.json").read_text())
    t = settings["temperature"]
    # a smoke run has a validation side, so a temperature was fitted (1.0 would prove nothing here)
    assert t > 0 and t != 1.0, settings
    images = [p.read_bytes() for p in _some_images()]
    out = mlflow.pyfunc.load_model(str(local)).predict(pd.DataFrame({"image": images}))

    net = keras.saving.load_model(local / "artifacts" / "model.keras", safe_mode=True, compile=False)
    pre = PreprocessConfig(**settings["preprocess"])
    x = np.stack([preprocess_bytes(b, pre) for b in images]).astype(np.float32) / 255.0
    p1 = np.clip(np.asarray(net(x, training=False), np.float64).reshape(-1), 1e-12, 1 - 1e-12)
    scaled = 1 / (1 + np.exp(-(np.log(p1) - np.log1p(-p1)) / t))
    expected_label = np.where(p1 > 0.5, "without_mask", "with_mask")
    assert list(out["label"]) == list(expected_label)
    np.testing.assert_allclose(out["probability"], np.maximum(scaled, 1 - scaled), atol=1e-5)


def test_predict_cli_labels_files_and_folders_and_reports_unreadable(first_run, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    images = _some_images(2)
    for img in images:
        (folder / img.name).write_bytes(img.read_bytes())
    (folder / "broken.jpg").write_bytes(b"this is not a jpeg")
    single = images[0]
    out = run_cli(["predict", str(folder), str(single)])
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [ln.split("\t") for ln in out.stdout.strip().splitlines()]
    assert len(lines) == len(images) + 2
    by_path = {Path(parts[0]).name: parts[1:] for parts in lines}
    assert by_path["broken.jpg"][0].startswith("error")
    good = [parts for parts in lines if not parts[1].startswith("error")]
    assert len(good) == len(images) + 1
    for _, label, prob in good:
        assert label in {"with_mask", "without_mask"}
        assert 0.5 <= float(prob) <= 1.0


def test_predict_cli_with_unknown_model_is_a_clear_error(servers, tmp_path):
    out = run_cli(["predict", "--model", "models:/no-such-model@champion", str(_some_images(1)[0])])
    assert out.returncode != 0
    assert "no-such-model" in out.stderr
    assert "Traceback" not in out.stderr


def test_repo_has_no_stray_prefect_import_in_maskcls():
    offenders = [p for p in (REPO / "maskcls").glob("*.py")
                 if "import prefect" in p.read_text() or "import mlflow" in p.read_text()
                 or "from prefect" in p.read_text() or "from mlflow" in p.read_text()]
    assert offenders == []
