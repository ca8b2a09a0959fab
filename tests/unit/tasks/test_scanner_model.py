"""tasks.scanner_model: the scanning pyfunc's rows, and its predict on real and broken photos;
tasks.tracking's scanner name and signature."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from maskcls.config import PreprocessConfig
from maskcls.detect import FaceDetector
from maskcls.inference import Classifier
from maskcls.scan import FaceResult, ImageResult
from tasks import tracking
from tasks.scanner_model import FaceMaskScanner, rows

SCENES = Path(__file__).resolve().parents[3].parent / "shared/datasets/face-mask-scenes"
CLASSES = ["with_mask", "without_mask"]


class SigmoidModel:
    """A Keras-like model whose one sigmoid unit says 0.9 (without_mask) for every input."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, ...]] = []

    def __call__(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self.seen.append(x.shape)
        return np.full((len(x), 1), 0.9, np.float32)


def scanning_model() -> tuple[FaceMaskScanner, SigmoidModel]:
    """The pyfunc as load_context builds it, with a stand-in Keras model (no training in unit tests)."""
    keras_model = SigmoidModel()
    model = FaceMaskScanner()
    model.classifier = Classifier(keras_model, PreprocessConfig(size=32), CLASSES)
    model.detector = FaceDetector()
    return model, keras_model


def png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


def test_rows_count_each_class_and_say_why_an_image_failed() -> None:
    scanned = ImageResult("0", None, None, faces=[FaceResult(1, 2, 3, 4, "with_mask", 0.8, 0.9),
                                                  FaceResult(5, 6, 7, 8, "without_mask", 0.7, 0.95),
                                                  FaceResult(9, 9, 9, 9, "with_mask", 0.6, 0.7)])
    out = rows([scanned, "truncated JPEG"], CLASSES)
    assert list(out.columns) == ["faces", "count_with_mask", "count_without_mask", "error"]
    assert out["count_with_mask"].tolist() == [2, 0] and out["count_without_mask"].tolist() == [1, 0]
    assert json.loads(out["faces"][0])[1] == {"x": 5, "y": 6, "w": 7, "h": 8, "label": "without_mask",
                                              "probability": 0.7, "detector_score": 0.95}
    assert out["faces"][1] == "[]" and out["error"].tolist() == ["", "truncated JPEG"]


def test_predict_finds_the_faces_of_a_scene_photo_and_classifies_each_crop() -> None:
    model, keras_model = scanning_model()
    photo = (SCENES / "images" / "maksssksksss0.jpg").read_bytes()
    out = model.predict(None, pd.DataFrame({"image": [photo]}))
    faces = json.loads(out["faces"][0])
    assert faces and all(f["label"] == "without_mask" and abs(f["probability"] - 0.9) < 1e-6 for f in faces)
    assert all(0 < f["detector_score"] <= 1 for f in faces)
    assert out["count_without_mask"][0] == len(faces) and out["count_with_mask"][0] == 0
    # Every face crop went to the classifier through its own preprocessing (32x32 grayscale).
    assert sum(shape[0] for shape in keras_model.seen) == len(faces)
    assert {shape[1:] for shape in keras_model.seen} == {(32, 32, 1)}


def test_predict_answers_every_row_when_one_photo_is_broken_and_whole_image_classifies_a_faceless_one() -> None:
    model, _ = scanning_model()
    blank = png(np.full((120, 160, 3), 128, np.uint8))
    frame = pd.DataFrame({"image": [b"not an image", blank]})
    out = model.predict(None, frame)
    assert out["error"][0] and out["faces"][0] == "[]" and out["error"][1] == ""
    assert json.loads(out["faces"][1]) == []
    whole = model.predict(None, frame, params={"whole_image": True})
    assert json.loads(whole["faces"][1]) == [{"x": 0, "y": 0, "w": 160, "h": 120, "label": "without_mask",
                                               "probability": pytest.approx(0.9), "detector_score": None}]
    assert whole["count_without_mask"].tolist() == [0, 1]


def test_scanner_names_per_class_set_and_the_signature_declares_a_binary_image_column() -> None:
    assert tracking.scanner_model_name(CLASSES) == "face-mask-scanner"
    assert tracking.scanner_model_name([*CLASSES, "mask_weared_incorrect"]) == "face-mask-scanner-3class"
    signature = tracking.scanner_signature(CLASSES)
    assert signature.inputs.to_dict() == [{"type": "binary", "name": "image", "required": True}]
    assert signature.outputs.input_names() == ["faces", "count_with_mask", "count_without_mask", "error"]
    assert signature.params.to_dict() == [{"name": "whole_image", "type": "boolean", "default": False,
                                           "shape": None}]


def test_loading_a_model_that_is_not_a_scanner_says_which_to_give(monkeypatch: pytest.MonkeyPatch) -> None:
    from maskcls.config import Settings
    from maskcls.errors import TrackingError
    from tasks.pyfunc_model import MaskClassifier

    class Loaded:
        """A loaded pyfunc: unwraps to its Python model."""

        def __init__(self, python_model: object) -> None:
            self.python_model = python_model

        def unwrap_python_model(self) -> object:
            return self.python_model

    monkeypatch.setattr(tracking, "load_model", lambda settings, uri: Loaded(MaskClassifier()))
    with pytest.raises(TrackingError, match="not a scanning model.*models:/face-mask-scanner@champion"):
        tracking.load_scanner(Settings.from_env({}), "models:/face-mask-classifier@champion")
    model, _ = scanning_model()
    monkeypatch.setattr(tracking, "load_model", lambda settings, uri: Loaded(model))
    assert tracking.load_scanner(Settings.from_env({}), "models:/face-mask-scanner@champion") is model
