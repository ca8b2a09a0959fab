"""The registered model, logged as code (MLflow models-from-code): no pickle anywhere.

It imports only mlflow, pandas (the pyfunc's DataFrame I/O), keras (through
``maskcls.inference``) and ``maskcls.inference``, whose code is stored in the model, so
it loads without Prefect and applies exactly the preprocessing it was trained with.
"""

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

from maskcls.inference import Classifier


class MaskClassifier(PythonModel):
    """DataFrame column ``image`` (encoded bytes) -> ``label`` and ``probability``."""

    def load_context(self, context):
        self.classifier = Classifier.load(context.artifacts["keras_model"], context.artifacts["settings"])

    def predict(self, context, model_input, params=None):
        if isinstance(model_input, pd.DataFrame):
            images = list(model_input["image"])
        else:
            images = list(model_input)
        results = self.classifier.predict_bytes(images)
        return pd.DataFrame(
            {
                "label": [r["label"] for r in results],
                "probability": [r["probability"] for r in results],
            }
        )


mlflow.models.set_model(MaskClassifier())
