"""The recipe's levers: batch normalisation, learning-rate schedule, class weights, on-the-fly
augmentation, face cropping, and flip averaging at inference."""

from __future__ import annotations

import cv2
import keras
import numpy as np
import pytest

from maskcls.config import InferenceConfig, PreprocessConfig, TrainConfig, load_config
from maskcls.inference import Classifier, write_settings
from maskcls.model import build_model, learning_rate
from maskcls.preprocess import largest_face_crop, to_model_input
from maskcls.train import augmenter, class_weights, make_dataset
from tests.unit.maskcls.test_detect import canvas
from tests.unit.maskcls.test_inference import Recorder, png


def test_batch_norm_follows_each_convolution_without_a_conv_bias() -> None:
    cfg = TrainConfig(conv_filters=(4, 8), dense_units=4, batch_norm=True)
    model = build_model(cfg, (20, 20, 3), 2)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds[:6] == ["Conv2D", "BatchNormalization", "Activation", "MaxPooling2D",
                         "Conv2D", "BatchNormalization"]
    assert all(not layer.use_bias for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    plain = build_model(TrainConfig(conv_filters=(4, 8), dense_units=4), (20, 20, 3), 2)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in plain.layers)


def test_cosine_schedule_decays_to_zero_over_every_step() -> None:
    cfg = TrainConfig(learning_rate=1e-3, epochs=4, lr_schedule="cosine")
    schedule = learning_rate(cfg, steps_per_epoch=10)
    assert float(schedule(0)) == pytest.approx(1e-3)
    assert float(schedule(20)) == pytest.approx(5e-4, rel=1e-3)
    assert float(schedule(40)) == pytest.approx(0.0, abs=1e-9)
    assert learning_rate(TrainConfig(learning_rate=2e-3), 10) == 2e-3


def test_balanced_class_weights_undo_the_imbalance() -> None:
    y = np.array([0] * 30 + [1] * 10)
    w = class_weights(y, 2)
    assert w[0] * 30 == pytest.approx(w[1] * 10)
    assert (w[0] * 30 + w[1] * 10) / 40 == pytest.approx(1.0)


def test_no_online_augmentation_by_default() -> None:
    assert augmenter(TrainConfig()) is None


def test_online_augmentation_changes_every_epoch_and_stays_in_range() -> None:
    cfg = TrainConfig(aug_brightness=0.3, aug_contrast=0.3, aug_rotation=15, aug_zoom=0.2, aug_blur=0.5)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(8, 24, 24, 3), dtype=np.uint8)
    ds = make_dataset(x, np.zeros(8), 8, shuffle=False, seed=0, n_classes=2, augment=augmenter(cfg))
    first, second = (np.asarray(next(iter(ds))[0]) for _ in range(2))
    assert first.shape == (8, 24, 24, 3)
    assert first.min() >= 0.0 and first.max() <= 1.0
    assert not np.allclose(first, x / 255.0, atol=0.02)
    assert not np.allclose(first, second)


def test_face_crop_cuts_the_largest_face_and_keeps_a_faceless_image_whole() -> None:
    img = canvas(640, 480, 200, [(300, 100)])
    crop = largest_face_crop(img, margin=0.15)
    assert 150 <= crop.shape[1] <= 320 and 150 <= crop.shape[0] <= 320
    # The crop is the placed face's square (with margin): its pixels appear at that place.
    found = cv2.matchTemplate(img, crop, cv2.TM_SQDIFF)
    y, x = np.unravel_index(int(found.argmin()), found.shape)
    assert 230 <= x + crop.shape[1] / 2 <= 470 and 30 <= y + crop.shape[0] / 2 <= 270
    grey = np.full((300, 300, 3), 128, np.uint8)
    assert largest_face_crop(grey, 0.15) is grey
    cropped = to_model_input(img, PreprocessConfig(size=32, color_mode="rgb", face_crop=True))
    whole = to_model_input(img, PreprocessConfig(size=32, color_mode="rgb"))
    assert cropped.shape == whole.shape == (32, 32, 3) and not np.array_equal(cropped, whole)


def left_half_bright(x: np.ndarray) -> np.ndarray:
    """P(class 1) = mean of the left half: not mirror-symmetric."""
    return x[:, :, : x.shape[2] // 2].reshape(len(x), -1).mean(axis=1, keepdims=True).astype(np.float32)


def test_flip_averaging_averages_the_image_and_its_mirror() -> None:
    img = np.zeros((10, 10, 1), np.uint8)
    img[:, :5] = 255  # bright left half
    pre = PreprocessConfig(size=10)
    plain = Classifier(Recorder(left_half_bright), pre, ["a", "b"])
    tta = Classifier(Recorder(left_half_bright), pre, ["a", "b"], inference=InferenceConfig(tta_flip=True))
    assert plain.proba(img[None])[0, 1] == pytest.approx(1.0)
    assert tta.proba(img[None])[0, 1] == pytest.approx(0.5)


def test_inference_and_face_crop_settings_round_trip_and_the_scanner_copy_does_not_crop(tmp_path) -> None:
    pre = PreprocessConfig(size=12, face_crop=True, face_margin=0.2)
    model = build_model(TrainConfig(conv_filters=(2,), dense_units=4, dropout=0.0), (12, 12, 1), 2)
    model.save(tmp_path / "m.keras")
    write_settings(tmp_path / "s.json", pre, ["a", "b"], inference=InferenceConfig(tta_flip=True))
    clf = Classifier.load(tmp_path / "m.keras", tmp_path / "s.json")
    assert clf.preprocess == pre and clf.inference.tta_flip
    cut = clf.for_cut_faces()
    assert not cut.preprocess.face_crop and cut.preprocess.face_margin == 0.2 and cut.inference.tta_flip
    assert clf.preprocess.face_crop  # the original is unchanged
    assert len(cut.predict_bytes([png(np.zeros((30, 30, 3), np.uint8))])) == 1


def test_a_settings_file_from_before_the_inference_section_loads_with_defaults(tmp_path) -> None:
    import json

    model = build_model(TrainConfig(conv_filters=(2,), dense_units=4, dropout=0.0), (12, 12, 1), 2)
    model.save(tmp_path / "m.keras")
    (tmp_path / "s.json").write_text(json.dumps({"preprocess": {"size": 12, "color_mode": "grayscale"},
                                                 "classes": ["a", "b"]}))
    clf = Classifier.load(tmp_path / "m.keras", tmp_path / "s.json")
    assert clf.inference == InferenceConfig() and not clf.preprocess.face_crop


def test_every_lever_is_a_setting() -> None:
    cfg = load_config("default", {"train.batch_norm": True, "train.lr_schedule": "plateau",
                                  "train.early_stopping_patience": 2, "inference.tta_flip": True,
                                  "preprocess.face_crop": True})
    assert cfg.train.batch_norm and cfg.train.early_stopping_patience == 2 and cfg.inference.tta_flip
    assert cfg.flat()["inference.tta_flip"] is True
