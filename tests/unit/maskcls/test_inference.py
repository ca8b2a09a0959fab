"""maskcls.inference: raw bytes in, label + probability out, with the training preprocessing."""

from __future__ import annotations

import json
import math

import cv2
import keras
import numpy as np
import pytest

from maskcls.config import PreprocessConfig, TrainConfig
from maskcls.inference import Classifier, write_settings
from maskcls.model import build_model
from maskcls.preprocess import preprocess_bytes

CLASSES = ["with_mask", "without_mask"]


def png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


def photo(seed: int, h: int = 40, w: int = 30) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


class Recorder:
    """A stand-in model: records what it is fed; output = a fixed function of the input."""

    def __init__(self, fn) -> None:
        self.fn = fn
        self.inputs: list[np.ndarray] = []

    def __call__(self, x, training=False):
        assert training is False
        x = np.asarray(x)
        self.inputs.append(x)
        return self.fn(x)


def mean_sigmoid(x: np.ndarray) -> np.ndarray:
    """P(class 1) = mean pixel value in [0, 1]: bright images are class 1."""
    return x.reshape(len(x), -1).mean(axis=1, keepdims=True).astype(np.float32)


# --- a real saved model -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("clf")
    pre = PreprocessConfig(size=12, color_mode="grayscale")
    keras.utils.set_random_seed(0)
    model = build_model(TrainConfig(conv_filters=(2,), dense_units=4, dropout=0.0), (12, 12, 1), 2)
    model_path = folder / "model.keras"
    model.save(model_path)
    settings_path = folder / "settings.json"
    write_settings(settings_path, pre, CLASSES)
    return model_path, settings_path, pre


def test_write_settings_is_plain_json(saved) -> None:
    _, settings_path, pre = saved
    settings = json.loads(settings_path.read_text())
    assert settings["classes"] == CLASSES
    assert PreprocessConfig(**settings["preprocess"]) == pre
    assert settings["temperature"] == 1.0


def test_load_restores_preprocessing_and_classes(saved) -> None:
    model_path, settings_path, pre = saved
    clf = Classifier.load(model_path, settings_path)
    assert clf.preprocess == pre
    assert clf.classes == CLASSES
    assert clf.model.input_shape == (None, pre.size, pre.size, pre.channels)


def test_predict_bytes_returns_a_class_and_the_probability_of_that_class(saved) -> None:
    model_path, settings_path, pre = saved
    clf = Classifier.load(model_path, settings_path)
    images = [png(photo(k)) for k in range(5)]
    results = clf.predict_bytes(images)
    assert len(results) == 5
    # Independent computation: preprocess, scale, call the Keras model, read the sigmoid.
    x = np.stack([preprocess_bytes(b, pre) for b in images]).astype(np.float32) / 255.0
    p1 = np.asarray(clf.model(x, training=False)).reshape(-1)
    for r, p in zip(results, p1):
        assert "error" not in r
        assert r["label"] in CLASSES
        assert 0.5 <= r["probability"] <= 1.0
        expected_label = CLASSES[1] if p > 0.5 else CLASSES[0]
        if abs(p - 0.5) > 1e-6:
            assert r["label"] == expected_label
        assert r["probability"] == pytest.approx(max(p, 1 - p), abs=1e-6)


def test_garbage_bytes_give_an_error_entry_and_do_not_shift_the_others(saved) -> None:
    model_path, settings_path, _ = saved
    clf = Classifier.load(model_path, settings_path)
    good = [png(photo(10)), png(photo(11))]
    alone = clf.predict_bytes(good)
    mixed = clf.predict_bytes([good[0], b"definitely not an image", b"", good[1]])
    assert len(mixed) == 4
    for bad in (mixed[1], mixed[2]):
        assert bad["label"] is None
        assert bad["error"]
        assert math.isnan(bad["probability"])
    assert mixed[0] == pytest.approx(alone[0])
    assert mixed[3] == pytest.approx(alone[1])


def test_all_garbage_is_all_errors(saved) -> None:
    clf = Classifier.load(*saved[:2])
    results = clf.predict_bytes([b"x", b"<html></html>"])
    assert [r["label"] for r in results] == [None, None]
    assert clf.predict_bytes([]) == []


# --- preprocessing and label mapping with a recording stand-in model ----------------------------


@pytest.mark.parametrize("mode", ["grayscale", "rgb"])
def test_the_model_is_fed_exactly_the_training_preprocessing(mode: str) -> None:
    pre = PreprocessConfig(size=10, color_mode=mode)
    rec = Recorder(mean_sigmoid)
    clf = Classifier(rec, pre, CLASSES)
    images = [png(photo(20 + k, h=33 + k, w=25)) for k in range(3)]
    clf.predict_bytes(images)
    fed = np.concatenate(rec.inputs)
    expected = np.stack([preprocess_bytes(b, pre) for b in images]).astype(np.float32) / 255.0
    assert fed.dtype == np.float32
    assert fed.shape == (3, 10, 10, pre.channels)
    np.testing.assert_array_equal(fed, expected)


def test_binary_label_and_probability_follow_the_sigmoid() -> None:
    clf = Classifier(Recorder(mean_sigmoid), PreprocessConfig(size=8), CLASSES)
    dark = png(np.full((16, 16, 3), 51, np.uint8))  # mean 0.2 -> class 0 with 0.8
    bright = png(np.full((16, 16, 3), 204, np.uint8))  # mean 0.8 -> class 1 with 0.8
    r_dark, r_bright = clf.predict_bytes([dark, bright])
    assert r_dark["label"] == "with_mask"
    assert r_dark["probability"] == pytest.approx(0.8, abs=1e-6)
    assert r_bright["label"] == "without_mask"
    assert r_bright["probability"] == pytest.approx(0.8, abs=1e-6)


def test_softmax_output_maps_to_class_names_in_order() -> None:
    classes = ["a", "b", "c"]

    def softmax_by_brightness(x: np.ndarray) -> np.ndarray:
        # Dark -> "a", middle -> "b", bright -> "c", each with probability 0.7.
        m = x.reshape(len(x), -1).mean(axis=1)
        idx = np.digitize(m, [1 / 3, 2 / 3])
        out = np.full((len(x), 3), 0.15, np.float32)
        out[np.arange(len(x)), idx] = 0.7
        return out

    clf = Classifier(Recorder(softmax_by_brightness), PreprocessConfig(size=8), classes)
    values = [240, 20, 128, 250, 10]
    results = clf.predict_bytes([png(np.full((9, 9), v, np.uint8)) for v in values], batch_size=2)
    assert [r["label"] for r in results] == ["c", "a", "b", "c", "a"]
    assert all(r["probability"] == pytest.approx(0.7) for r in results)


def test_batches_keep_the_input_order() -> None:
    rec = Recorder(mean_sigmoid)
    clf = Classifier(rec, PreprocessConfig(size=8), CLASSES)
    values = [10, 250, 30, 240, 5, 200, 128]
    data = [png(np.full((12, 12), v, np.uint8)) for v in values]
    data.insert(3, b"garbage")
    results = clf.predict_bytes(data, batch_size=3)
    assert len(rec.inputs) == 3  # 7 good images in batches of 3
    expected = [CLASSES[1] if v / 255 > 0.5 else CLASSES[0] for v in values]
    expected.insert(3, None)
    assert [r["label"] for r in results] == expected


# --- the calibration temperature stored in the model ---------------------------------------------


def test_the_stored_temperature_is_applied_to_the_probability(saved, tmp_path) -> None:
    model_path, _, pre = saved
    settings_path = tmp_path / "settings.json"
    write_settings(settings_path, pre, CLASSES, temperature=2.5)
    assert json.loads(settings_path.read_text())["temperature"] == 2.5
    clf = Classifier.load(model_path, settings_path)
    assert clf.temperature == 2.5
    images = [png(photo(30 + k)) for k in range(6)]
    x = np.stack([preprocess_bytes(b, pre) for b in images]).astype(np.float32) / 255.0
    p1 = np.asarray(clf.model(x, training=False), np.float64).reshape(-1)
    # Independently: the sigmoid's logit divided by T.
    logit = np.log(p1) - np.log1p(-p1)
    scaled = 1 / (1 + np.exp(-logit / 2.5))
    for r, p, q in zip(clf.predict_bytes(images), p1, scaled):
        assert r["label"] == (CLASSES[1] if p > 0.5 else CLASSES[0])
        assert r["probability"] == pytest.approx(max(q, 1 - q), abs=1e-6)


def test_a_temperature_softens_a_softmax_without_changing_labels() -> None:
    classes = ["a", "b", "c"]

    def fixed(x: np.ndarray) -> np.ndarray:
        out = np.tile(np.array([0.1, 0.2, 0.7], np.float32), (len(x), 1))
        out[x.reshape(len(x), -1).mean(axis=1) < 0.5] = [0.6, 0.3, 0.1]
        return out

    images = [png(np.full((9, 9), v, np.uint8)) for v in (10, 240)]
    plain = Classifier(Recorder(fixed), PreprocessConfig(size=8), classes).predict_bytes(images)
    warm = Classifier(Recorder(fixed), PreprocessConfig(size=8), classes, temperature=2.0).predict_bytes(images)
    assert [r["label"] for r in warm] == [r["label"] for r in plain] == ["a", "c"]
    # softmax(log p / 2) = sqrt(p) renormalised
    assert warm[0]["probability"] == pytest.approx(math.sqrt(0.6) / sum(map(math.sqrt, (0.6, 0.3, 0.1))), abs=1e-6)
    assert warm[1]["probability"] == pytest.approx(math.sqrt(0.7) / sum(map(math.sqrt, (0.1, 0.2, 0.7))), abs=1e-6)
    assert plain[1]["probability"] == pytest.approx(0.7)


def test_an_old_settings_file_without_a_temperature_loads_uncalibrated(saved, tmp_path) -> None:
    model_path, settings_path, pre = saved
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"preprocess": pre.model_dump(mode="json"), "classes": CLASSES}))
    clf = Classifier.load(model_path, old)
    assert clf.temperature == 1.0
    images = [png(photo(40 + k)) for k in range(3)]
    assert clf.predict_bytes(images) == Classifier.load(model_path, settings_path).predict_bytes(images)


@pytest.mark.parametrize("bad", [0, -1.5, "2", None, True])
def test_a_damaged_temperature_is_a_clear_error(saved, tmp_path, bad) -> None:
    from maskcls.errors import MaskclsError

    model_path, _, pre = saved
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"preprocess": pre.model_dump(mode="json"), "classes": CLASSES, "temperature": bad}))
    with pytest.raises(MaskclsError, match=r"bad\.json.*temperature"):
        Classifier.load(model_path, path)
