"""The registered scanning model, logged as code (MLflow models-from-code): no pickle anywhere.

Photos in, every face found, labelled and counted out. It bundles the face detector's
model file and one classifier version's own files (its Keras model and preprocessing
settings), so it loads and serves without the registry. It imports only mlflow, pandas
and maskcls modules, whose code is stored in the model: detection, cropping and
classification are ``maskcls.scan.Scanner`` with ``maskcls.inference.Classifier`` as its
classifier, exactly what ``maskcls scan`` runs.
"""

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

from maskcls.detect import FaceDetector
from maskcls.inference import Classifier
from maskcls.preprocess import DecodeError
from maskcls.scan import Classify, ImageResult, ScanConfig, Scanner, read_image


def classify_with(classifier: Classifier) -> Classify:
    """The classifier as the scanner's callable: encoded face crops -> (label, probability)."""

    def classify(images: Sequence[bytes]) -> list[tuple[str, float]]:
        return [(r["label"], r["probability"]) for r in classifier.predict_bytes(images)]

    return classify


def faces_json(result: ImageResult) -> str:
    """The faces of one image as the model's ``faces`` column: a JSON list of
    ``{x, y, w, h, label, probability, detector_score}``."""
    return json.dumps([asdict(f) for f in result.faces])


def rows(results: Sequence[ImageResult | str], classes: Sequence[str]) -> pd.DataFrame:
    """One row per image: ``faces``, ``count_<class>`` and ``error`` ("" for a scanned image; for an
    unreadable one, why, with no faces)."""
    out: dict[str, list] = {"faces": [], **{f"count_{c}": [] for c in classes}, "error": []}
    for r in results:
        faces = [] if isinstance(r, str) else r.faces
        out["faces"].append("[]" if isinstance(r, str) else faces_json(r))
        for c in classes:
            out[f"count_{c}"].append(sum(f.label == c for f in faces))
        out["error"].append(r if isinstance(r, str) else "")
    return pd.DataFrame(out)


class FaceMaskScanner(PythonModel):
    """DataFrame column ``image`` (encoded bytes) -> ``faces`` (JSON), ``count_<class>`` and ``error`` per image.

    Param ``whole_image`` (default false): an image with no face found is classified whole.
    """

    def load_context(self, context):
        # The scanner cuts every face itself: the classifier must not look for a face inside the crop.
        self.classifier = Classifier.load(context.artifacts["keras_model"],
                                          context.artifacts["settings"]).for_cut_faces()
        self.detector = FaceDetector(model_path=Path(context.artifacts["detector"]))

    def scanner(self, config: ScanConfig) -> Scanner:
        """A scanner with this model's detector and classifier and ``config``'s other settings."""
        return Scanner(classify_with(self.classifier), config, self.detector)

    def predict(self, context, model_input, params=None):
        images = list(model_input["image"]) if isinstance(model_input, pd.DataFrame) else list(model_input)
        scanner = self.scanner(ScanConfig(whole_image=bool((params or {}).get("whole_image", False))))
        decoded: list = []
        for data in images:
            try:
                decoded.append(read_image(bytes(data)))
            except DecodeError as exc:  # one unreadable photo says why in its row; the others still answer
                decoded.append(str(exc))
        found = iter(scanner.scan_arrays([d for d in decoded if not isinstance(d, str)]))
        return rows([d if isinstance(d, str) else next(found) for d in decoded], self.classifier.classes)


mlflow.models.set_model(FaceMaskScanner())
