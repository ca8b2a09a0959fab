"""maskcls: the face-mask classifier library (pure Python, numpy, OpenCV, Keras).

It never imports prefect or mlflow: orchestration lives in ``tasks``/``flows``.
"""

__version__ = "0.1.0"
