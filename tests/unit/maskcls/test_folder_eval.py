"""`maskcls evaluate`'s pure part: model URIs, the labelled-folder layout, scoring with a model's preprocessing."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from maskcls.config import PreprocessConfig
from maskcls.errors import ConfigError
from maskcls.folder_eval import ModelRef, labelled_images, parse_model_uri, score_folder

CLASSES = ["with_mask", "without_mask"]


class BrightIsUnmasked:
    """A stand-in Classifier: an image brighter than mid-grey is `without_mask`, with its preprocessing."""

    classes = CLASSES
    preprocess = PreprocessConfig(size=16, color_mode="grayscale")

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def proba(self, batch_uint8: np.ndarray) -> np.ndarray:
        self.shapes.append(batch_uint8.shape)
        p = (batch_uint8.reshape(len(batch_uint8), -1).mean(axis=1) / 255.0)[:, None]
        return np.concatenate([1 - p, p], axis=1)


def image(path: Path, value: int, size: int = 40) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((size, size, 3), value, np.uint8))
    return path


def test_model_uris_name_a_version_an_alias_or_anything_else() -> None:
    assert parse_model_uri("models:/face-mask-classifier/3") == ModelRef(
        "models:/face-mask-classifier/3", "face-mask-classifier", "3", None)
    assert parse_model_uri("models:/face-mask-classifier@champion").alias == "champion"
    assert parse_model_uri("runs:/abc/model") == ModelRef("runs:/abc/model")
    for bad in ("models:/face-mask-classifier", "models:/x/three", "models:/x@"):
        with pytest.raises(ConfigError, match="models:/NAME/VERSION"):
            parse_model_uri(bad)
    with pytest.raises(ConfigError, match="--model is empty"):
        parse_model_uri(" ")


def test_images_are_labelled_by_their_class_folder_in_the_models_class_order(tmp_path: Path) -> None:
    image(tmp_path / "without_mask" / "a.jpg", 200)
    image(tmp_path / "with_mask" / "deep" / "b.png", 20)
    (tmp_path / "with_mask" / "notes.txt").write_text("not an image")
    image(tmp_path / "loose.jpg", 20)
    found = labelled_images(tmp_path, CLASSES)
    assert [p.relative_to(tmp_path).as_posix() for p in found.files] == ["with_mask/deep/b.png", "without_mask/a.jpg"]
    assert found.labels == [0, 1] and found.missing == [] and found.loose == [tmp_path / "loose.jpg"]


def test_a_class_without_a_folder_is_reported_missing(tmp_path: Path) -> None:
    image(tmp_path / "with_mask" / "a.jpg", 20)
    assert labelled_images(tmp_path, CLASSES).missing == ["without_mask"]


def test_layouts_that_do_not_fit_the_model_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a folder"):
        labelled_images(tmp_path / "nope", CLASSES)
    (tmp_path / "empty_class").mkdir()
    image(tmp_path / "stray.jpg", 10)
    with pytest.raises(ConfigError, match=r"no class folders with images.*\(with_mask, without_mask\).*1 images "
                                          "outside any class folder"):
        labelled_images(tmp_path, CLASSES)
    image(tmp_path / "masked" / "a.jpg", 10)
    image(tmp_path / "with_mask" / "b.jpg", 10)
    with pytest.raises(ConfigError, match=r"class folder\(s\) masked match no class of the model "
                                          r"\(with_mask, without_mask\)"):
        labelled_images(tmp_path, CLASSES)


def test_scoring_reads_through_the_models_preprocessing_skips_unreadable_images_and_writes_the_files(
        tmp_path: Path) -> None:
    data = tmp_path / "data"
    for k in range(3):
        image(data / "with_mask" / f"m{k}.jpg", 30)
        image(data / "without_mask" / f"u{k}.jpg", 220)
    image(data / "with_mask" / "looks_unmasked.jpg", 240)  # misclassified by the stand-in
    (data / "without_mask" / "broken.jpg").write_bytes(b"not a jpeg")
    classifier = BrightIsUnmasked()
    out = tmp_path / "out"
    score = score_folder(classifier, labelled_images(data, CLASSES), out, batch_size=4)
    assert classifier.shapes == [(4, 16, 16, 1), (3, 16, 16, 1)]  # the model's own size and colour mode
    assert score.unreadable[0][0] == "without_mask/broken.jpg" and len(score.unreadable) == 1
    assert score.counts == {"with_mask": 4, "without_mask": 3}
    assert score.metrics["accuracy"] == pytest.approx(6 / 7)
    assert score.metrics["recall_with_mask"] == pytest.approx(3 / 4) and score.metrics["recall_without_mask"] == 1.0
    assert {p.name for p in out.iterdir()} == {"confusion_matrix.json", "confusion_matrix.png",
                                              "classification_report.txt", "misclassified.png",
                                              "test_predictions.json", "reliability.png"}
    assert json.loads((out / "confusion_matrix.json").read_text())["matrix"] == [[3, 1], [0, 3]]
    wrong = [p for p in json.loads((out / "test_predictions.json").read_text()) if p["true"] != p["predicted"]]
    assert [p["path"] for p in wrong] == ["with_mask/looks_unmasked.jpg"]


def test_a_folder_with_no_readable_image_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "with_mask").mkdir()
    (tmp_path / "with_mask" / "a.jpg").write_bytes(b"junk")
    with pytest.raises(ConfigError, match="none of the 1 images"):
        score_folder(BrightIsUnmasked(), labelled_images(tmp_path, CLASSES), tmp_path / "out")
