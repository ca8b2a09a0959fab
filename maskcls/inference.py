"""Raw image bytes in, label + probability out, with the preprocessing used in training."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from maskcls.config import InferenceConfig, PreprocessConfig
from maskcls.preprocess import DecodeError, preprocess_bytes


def probability_columns(output: Any) -> np.ndarray:
    """(n, n_classes) class probabilities from a model output; one sigmoid unit becomes two columns."""
    p = np.asarray(output)
    if p.shape[-1] == 1:
        p = np.concatenate([1.0 - p, p], axis=-1)
    return p


class Classifier:
    """A trained Keras model with its preprocessing settings and class names."""

    def __init__(self, model: Any, preprocess: PreprocessConfig, classes: Sequence[str],
                 inference: InferenceConfig | None = None) -> None:
        self.model = model
        self.preprocess = preprocess
        self.classes = list(classes)
        self.inference = inference or InferenceConfig()

    @classmethod
    def load(cls, model_path: Path | str, settings_path: Path | str) -> "Classifier":
        """Load a .keras file (safe mode) and the settings JSON written by ``write_settings``."""
        import keras

        settings = json.loads(Path(settings_path).read_text())
        model = keras.saving.load_model(model_path, safe_mode=True, compile=False)
        # Files written before a setting existed load with its default.
        return cls(model, PreprocessConfig(**settings["preprocess"]), settings["classes"],
                   InferenceConfig(**settings.get("inference", {})))

    def for_cut_faces(self) -> Classifier:
        """This classifier for images that already are face crops (the scanner's): no second face crop."""
        return Classifier(self.model, self.preprocess.model_copy(update={"face_crop": False}), self.classes,
                          self.inference)

    def proba(self, batch_uint8: np.ndarray) -> np.ndarray:
        x = batch_uint8.astype(np.float32) / 255.0
        p = probability_columns(self.model(x, training=False))
        if self.inference.tta_flip:
            p = (p + probability_columns(self.model(x[:, :, ::-1], training=False))) / 2
        return p

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


def write_settings(path: Path, preprocess: PreprocessConfig, classes: Sequence[str],
                   inference: InferenceConfig | None = None) -> None:
    path.write_text(json.dumps({"preprocess": preprocess.model_dump(mode="json"), "classes": list(classes),
                                "inference": (inference or InferenceConfig()).model_dump(mode="json")}, indent=2))
