"""Raw image bytes in, label + probability out, with the preprocessing used in training."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from maskcls.config import InferenceConfig, PreprocessConfig
from maskcls.errors import ConfigError
from maskcls.preprocess import DecodeError, preprocess_bytes


def probability_columns(output: Any) -> np.ndarray:
    """(n, n_classes) class probabilities from a model output; one sigmoid unit becomes two columns."""
    p = np.asarray(output)
    if p.shape[-1] == 1:
        p = np.concatenate([1.0 - p, p], axis=-1)
    return p


# Probabilities are clipped here before their log: a saturated float32 sigmoid gives exactly 0 or 1.
_EPS = 1e-12


def apply_temperature(proba: Any, temperature: float) -> np.ndarray:
    """Class probabilities (n, n_classes) -> softmax(log(p) / T): temperature scaling.

    T > 1 softens, T < 1 sharpens; the argmax never changes. For two columns from one
    sigmoid this is sigmoid(logit / T). T = 1 returns the probabilities unchanged.
    """
    p = np.asarray(proba)
    if temperature == 1.0:
        return p
    z = np.log(np.clip(p.astype(np.float64), _EPS, 1.0)) / temperature
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class Classifier:
    """A trained Keras model with its preprocessing settings, class names and calibration temperature."""

    def __init__(self, model: Any, preprocess: PreprocessConfig, classes: Sequence[str],
                 temperature: float = 1.0, inference: InferenceConfig | None = None) -> None:
        self.model = model
        self.preprocess = preprocess
        self.classes = list(classes)
        self.temperature = float(temperature)
        self.inference = inference or InferenceConfig()

    @classmethod
    def load(cls, model_path: Path | str, settings_path: Path | str) -> "Classifier":
        """Load a .keras file (safe mode) and the settings JSON written by ``write_settings``.

        A settings file without ``temperature`` (a version registered before calibration) means 1.0.
        """
        import keras

        settings = json.loads(Path(settings_path).read_text())
        temperature = settings.get("temperature", 1.0)
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
                or not math.isfinite(temperature) or temperature <= 0:
            raise ConfigError(f"{settings_path}: temperature {temperature!r} is not a positive number; "
                              "the model's settings file is damaged: register the model again")
        model = keras.saving.load_model(model_path, safe_mode=True, compile=False)
        # A settings file written before a setting existed loads with its default.
        return cls(model, PreprocessConfig(**settings["preprocess"]), settings["classes"], temperature,
                   InferenceConfig(**settings.get("inference", {})))

    def for_cut_faces(self) -> "Classifier":
        """This classifier for images that already are face crops (the scanner's): no second face crop."""
        return Classifier(self.model, self.preprocess.model_copy(update={"face_crop": False}), self.classes,
                          self.temperature, self.inference)

    def proba(self, batch_uint8: np.ndarray) -> np.ndarray:
        """Calibrated class probabilities (n, n_classes) of a uint8 batch."""
        x = batch_uint8.astype(np.float32) / 255.0
        p = probability_columns(self.model(x, training=False))
        if self.inference.tta_flip:  # the mean of the image's and its mirror's probabilities
            p = (p + probability_columns(self.model(x[:, :, ::-1], training=False))) / 2
        return apply_temperature(p, self.temperature)

    def predict_bytes(self, images: Sequence[bytes], batch_size: int = 256) -> list[dict[str, Any]]:
        """One dict per image: ``label`` and ``probability`` (of that label), or ``error``."""
        results: list[dict[str, Any]] = [{} for _ in images]
        ok: list[int] = []
        arrays: list[np.ndarray] = []
        for k, data in enumerate(images):
            try:
                arrays.append(preprocess_bytes(bytes(data), self.preprocess))
                ok.append(k)
            except DecodeError as exc:
                results[k] = {"label": None, "probability": float("nan"), "error": str(exc)}
        for start in range(0, len(arrays), batch_size):
            p = self.proba(np.stack(arrays[start : start + batch_size]))
            for j, row in enumerate(p):
                best = int(row.argmax())
                results[ok[start + j]] = {"label": self.classes[best], "probability": float(row[best])}
        return results


def write_settings(path: Path, preprocess: PreprocessConfig, classes: Sequence[str], temperature: float = 1.0,
                   inference: InferenceConfig | None = None) -> None:
    """The model's settings file: preprocessing, class names, the calibration temperature and how to apply it."""
    path.write_text(json.dumps({"preprocess": preprocess.model_dump(mode="json"), "classes": list(classes),
                                "temperature": float(temperature),
                                "inference": (inference or InferenceConfig()).model_dump(mode="json")}, indent=2))
