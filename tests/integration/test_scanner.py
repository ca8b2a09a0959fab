"""The scanning model in the registry: registered with the classifier champion, loaded as any
user loads it, and served over HTTP by `make serve`."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest

from maskcls.config import CHAMPION_ALIAS, REGISTERED_MODEL_NAME
from maskcls.detect import MODEL_PATH, MODEL_SHA256
from maskcls.scenes import read_voc
from tasks.tracking import SCANNER_MODEL_NAME, WRAPS_TAG
from tests.support import REPO
from tests.support.ports import free_port
from tests.support.waiting import wait_until

from .conftest import run_cli

pytestmark = pytest.mark.integration

SCENES = REPO.parent / "shared" / "datasets" / "face-mask-scenes"
#: `report` photos (not the ones the detector was tuned on) with 3, 5 and 7 annotated faces.
PHOTOS = ("maksssksksss0.jpg", "maksssksksss116.jpg", "maksssksksss121.jpg")
CLASSES = ("with_mask", "without_mask")

# A fresh interpreter outside the checkout: the model runs only the code it carries.
LOAD_AND_SCAN = r"""
import json, sys
import mlflow, pandas as pd
model = mlflow.pyfunc.load_model("models:/face-mask-scanner@champion")
out = model.predict(pd.DataFrame({"image": [open(p, "rb").read() for p in sys.argv[1:]]}))
print(json.dumps(out.to_dict(orient="records")))
"""


def annotated_faces(photo: str) -> int:
    return len(read_voc(SCENES / "annotations" / f"{Path(photo).stem}.xml"))


def bundled(client, name: str, version: str) -> dict[str, bytes]:
    """The files under `artifacts/` of a registered version's model folder, by name."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}", dst_path=tmp,
                                                        tracking_uri=client.tracking_uri)) / "artifacts"
        return {p.name: p.read_bytes() for p in root.iterdir()}


@pytest.fixture(scope="module")
def scanned(first_run, servers, tmp_path_factory) -> list[dict]:
    """The scanner champion's rows for PHOTOS, loaded with mlflow.pyfunc.load_model in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", LOAD_AND_SCAN, *(str(SCENES / "images" / p) for p in PHOTOS)],
                         env={**os.environ, "PYTHONPATH": ""}, cwd=tmp_path_factory.mktemp("fresh"),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_scanner_champion_bundles_the_classifier_champion(first_run, mlflow_client):
    classifier = mlflow_client.get_model_version_by_alias(REGISTERED_MODEL_NAME, CHAMPION_ALIAS)
    scanner = mlflow_client.get_model_version_by_alias(SCANNER_MODEL_NAME, CHAMPION_ALIAS)
    assert scanner.tags[WRAPS_TAG] == str(classifier.version)
    # The classifier version's own files, byte for byte, and the shipped detector.
    files = bundled(mlflow_client, SCANNER_MODEL_NAME, scanner.version)
    own = bundled(mlflow_client, REGISTERED_MODEL_NAME, classifier.version)
    assert set(files) == {"model.keras", "preprocessing.json", MODEL_PATH.name}
    assert files["model.keras"] == own["model.keras"] and files["preprocessing.json"] == own["preprocessing.json"]
    assert hashlib.sha256(files[MODEL_PATH.name]).hexdigest() == MODEL_SHA256
    if first_run["promotion"] == "promoted":  # this run moved the champion: its run registered the scanner
        assert scanner.run_id == classifier.run_id


def test_the_loaded_scanner_finds_the_annotated_faces(scanned):
    assert len(scanned) == len(PHOTOS)
    for photo, row in zip(PHOTOS, scanned):
        faces = json.loads(row["faces"])
        expected = annotated_faces(photo)
        # YuNet misses or adds about one face in five on these photos (benchmarks/scan.py: F1 0.81).
        assert abs(len(faces) - expected) <= max(1, round(0.25 * expected)), (photo, len(faces), expected)
        assert row["error"] == "" and sum(row[f"count_{c}"] for c in CLASSES) == len(faces)
        for f in faces:
            assert set(f) == {"x", "y", "w", "h", "label", "probability", "detector_score"}
            assert f["label"] in CLASSES and 0.5 <= f["probability"] <= 1 and 0 < f["detector_score"] <= 1
            assert f["w"] > 0 and f["h"] > 0


def test_make_serve_answers_a_base64_photo(scanned, servers, tmp_path):
    port = free_port()
    log = tmp_path / "serve.log"
    # -o: the session's venv is in place; `make serve` must not try to reinstall it.
    with log.open("w") as out:
        proc = subprocess.Popen(["make", "--no-print-directory", "-o", ".venv/.installed", "serve"], cwd=REPO,
                                env={**os.environ, "MASKCLS_SERVE_PORT": str(port)}, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        def pong() -> bool:
            try:
                return httpx.get(f"{url}/ping", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(pong, 240, f"`make serve` on {url}", interval=1, alive=lambda: proc.poll() is None,
                   log=log.read_text)
        photo = (SCENES / "images" / PHOTOS[0]).read_bytes()
        body = {"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(photo).decode()]]}}
        resp = httpx.post(f"{url}/invocations", json=body, timeout=60)
        assert resp.status_code == 200, resp.text
        (answer,) = resp.json()["predictions"]
        # What the loaded model said of the same photo (scored there in a batch with the other
        # photos' faces, so probabilities may differ in their last bits).
        assert {k: v for k, v in answer.items() if k != "faces"} == {k: v for k, v in scanned[0].items()
                                                                      if k != "faces"}
        for served, loaded in zip(json.loads(answer["faces"]), json.loads(scanned[0]["faces"]), strict=True):
            assert served == {**loaded, "probability": pytest.approx(loaded["probability"], abs=1e-5)}
        broken = httpx.post(f"{url}/invocations", json={"dataframe_split": {"columns": ["image"], "data": [
            [base64.b64encode(photo[: len(photo) // 2]).decode()]]}}, timeout=60)
        assert broken.status_code == 200 and broken.json()["predictions"][0]["error"].startswith("truncated")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # make, mlflow and its uvicorn: the group started above
        proc.wait(timeout=30)


def test_maskcls_scan_runs_the_scanner_champion(scanned, tmp_path):
    photo = SCENES / "images" / PHOTOS[0]
    done = run_cli(["scan", str(photo), "--out", str(tmp_path / "out"), "--json", "--no-images"])
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["faces"] == len(json.loads(scanned[0]["faces"]))
    assert {c: summary[f"count_{c}"] for c in CLASSES} == {c: scanned[0][f"count_{c}"] for c in CLASSES}
