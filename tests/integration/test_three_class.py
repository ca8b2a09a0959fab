"""The smoke profile on a small three-class subset of every shared source, end to end, against the
session's servers: one flow run, registered under the three-class name with its licence; the
two-class classifier is not touched."""

from __future__ import annotations

import csv
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from maskcls.config import CHAMPION_ALIAS, REGISTERED_MODEL_NAME
from maskcls.names import classifier_model_name, scanner_model_name
from tests.support.data import PAST_COPIES, SHARED, copy_subset

from .conftest import SESSION_HOME

pytestmark = pytest.mark.integration

THREE = ["mask_weared_incorrect", "with_mask", "without_mask"]
NAME = "face-mask-classifier-3class"
SCENES = SHARED.parent / "face-mask-scenes"
INCORRECT = SHARED.parent / "face-mask-incorrect"


def scene_subset(dest: Path, n_photos: int) -> Path:
    """``n_photos`` tune photos of the shared scenes (those with an incorrectly worn mask first), plus
    one report photo, which the ?part=tune part must leave out."""
    with (SCENES / "splits.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))

    def labels(row: dict[str, str]) -> set[str]:
        root = ET.parse(SCENES / "annotations" / f"{Path(row['image']).stem}.xml").getroot()
        return {(o.findtext("name") or "").strip() for o in root.iter("object")}

    tune = sorted((r for r in rows if r["part"] == "tune"),
                  key=lambda r: ("mask_weared_incorrect" not in labels(r), r["image"]))[:n_photos]
    report = [r for r in rows if r["part"] == "report"][:1]
    for sub in ("images", "annotations"):
        (dest / sub).mkdir(parents=True)
    for r in tune + report:
        shutil.copy2(SCENES / "images" / r["image"], dest / "images" / r["image"])
        xml = f"{Path(r['image']).stem}.xml"
        shutil.copy2(SCENES / "annotations" / xml, dest / "annotations" / xml)
    (dest / "splits.csv").write_text("image,part\n" + "".join(f"{r['image']},{r['part']}\n" for r in tune + report))
    return dest


def incorrect_subset(dest: Path, n_incorrect: int, n_correct: int) -> Path:
    for cls, n in (("mask_weared_incorrect", n_incorrect), ("with_mask", n_correct)):
        (dest / cls).mkdir(parents=True)
        for f in sorted((INCORRECT / cls).iterdir())[::3][:n]:
            shutil.copy2(f, dest / cls / f.name)
    shutil.copy2(INCORRECT / "SOURCE.md", dest / "SOURCE.md")
    return dest


def latest_version(client, name: str) -> int:
    return max((int(v.version) for v in client.search_model_versions(f"name='{name}'")), default=0)


def alias(client, name: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name).aliases.get(CHAMPION_ALIAS)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        return None


def test_a_three_class_run_registers_under_its_own_name(servers, mlflow_client, tmp_path):
    from flows.train import train_flow

    faces = copy_subset(tmp_path / "faces", 25, offset=PAST_COPIES + 7, step=5)
    scenes = scene_subset(tmp_path / "scenes", 12)
    incorrect = incorrect_subset(tmp_path / "incorrect", 40, 20)
    two_class = (latest_version(mlflow_client, REGISTERED_MODEL_NAME), alias(mlflow_client, REGISTERED_MODEL_NAME))

    result = train_flow(profile="smoke", source=[str(faces), f"voc:{scenes}?part=tune",
                                                 f"{incorrect}?group=person"])

    assert classifier_model_name(THREE) == NAME and result["registered_model"] == NAME
    assert list(result["counts"]["test"]) == THREE
    assert all(result["counts"][side][c] > 0 for side in ("train", "test") for c in THREE), result["counts"]
    assert {f"test_recall_{c}" for c in THREE} <= set(result["metrics"])
    version = mlflow_client.get_model_version(NAME, result["model_version"])
    assert version.tags["licence"] == "CC BY-NC-SA 4.0"
    assert "CC BY-NC-SA 4.0" in version.description and "non-commercial" in version.description
    assert "CC BY-NC-SA 4.0" in mlflow_client.get_registered_model(NAME).description
    # the two-class classifier: no new version, its champion where it was
    assert (latest_version(mlflow_client, REGISTERED_MODEL_NAME), alias(mlflow_client, REGISTERED_MODEL_NAME)) == two_class

    # every part is in the run's source; the report photo was not cut, only the tune ones
    params = mlflow_client.get_run(result["mlflow_run_id"]).data.params
    assert params["source"].count(",") == 2 and f"voc:{scenes}?part=tune" in params["source"]
    composed = list((SESSION_HOME / "downloads" / "composed").glob("*/*/scenes-tune~*"))
    report = [p.stem for p in (scenes / "images").iterdir()
              if p.name == (scenes / "splits.csv").read_text().strip().splitlines()[-1].split(",")[0]]
    assert composed and report and not [p for p in composed if f"~{report[0]}~" in p.name]
    champion = alias(mlflow_client, NAME)
    assert champion is not None
    if result["promotion"] == "promoted":
        # the three-class scanner follows the three-class champion
        scanner = mlflow_client.get_model_version_by_alias(scanner_model_name(THREE), CHAMPION_ALIAS)
        assert scanner.tags["classifier_version"] == result["model_version"]
        assert scanner.tags["classifier_model"] == NAME

    # the registered pyfunc answers with one of the three classes
    import pandas as pd

    import mlflow

    model = mlflow.pyfunc.load_model(f"models:/{NAME}/{result['model_version']}")
    images = [next((incorrect / c).iterdir()).read_bytes() for c in ("mask_weared_incorrect", "with_mask")]
    out = model.predict(pd.DataFrame({"image": images}))
    assert set(out["label"]) <= set(THREE) and all(1 / 3 <= p <= 1 for p in out["probability"])
