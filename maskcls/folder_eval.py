"""Score a classifier on a user's own labelled class folders (``DIR/<class>/*.jpg``): `maskcls evaluate`.

The same metrics and files as a training run's evaluation (``maskcls.evaluate.write_evaluation``),
with the images read through the model's own preprocessing (the ``Classifier`` loaded from it).
Pure: no MLflow; the command (``flows/eval_cli.py``) loads the model and logs the result.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from maskcls.errors import ConfigError
from maskcls.files import (
    image_files,
    is_image_name,
    list_dir,
    read_regular,
    visible_subdirs,
)
from maskcls.preprocess import DecodeError, preprocess_bytes

#: `models:/NAME/VERSION` or `models:/NAME@ALIAS`.
_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w-]+))/?$")


@dataclass(frozen=True)
class ModelRef:
    """What a model URI names: a registered model's version or alias, or (name None) something else."""

    uri: str
    name: str | None = None
    version: str | None = None
    alias: str | None = None


def parse_model_uri(uri: str) -> ModelRef:
    """`models:/face-mask-classifier/3`, `models:/face-mask-classifier@champion`, or any other URI
    (`runs:/<id>/model`, a path) as is; a malformed `models:/` URI is a ConfigError."""
    if not uri.startswith("models:/"):
        if not uri.strip():
            raise ConfigError("--model is empty: give a model URI, e.g. models:/face-mask-classifier@champion")
        return ModelRef(uri=uri)
    match = _MODELS_URI.match(uri)
    if match is None:
        raise ConfigError(f"--model {uri!r} is not a registered model URI: write models:/NAME/VERSION "
                          "(e.g. models:/face-mask-classifier/3) or models:/NAME@ALIAS (e.g. "
                          "models:/face-mask-classifier@champion)")
    return ModelRef(uri=uri, **match.groupdict())


@dataclass
class LabelledImages:
    """The images of a labelled folder: file paths and class indices in the model's class order."""

    root: Path
    classes: list[str]
    files: list[Path]
    labels: list[int]
    #: The model's classes that have no folder (their recall is not measured).
    missing: list[str] = field(default_factory=list)
    #: Image files directly in the root, outside any class folder (not scored).
    loose: list[Path] = field(default_factory=list)


def labelled_images(root: Path, classes: Sequence[str]) -> LabelledImages:
    """``root/<class>/**`` images, labelled by their class folder; ConfigError when the layout does
    not fit (not a folder, no class folder with images, a folder naming no class of the model)."""
    classes = list(classes)
    expected = ", ".join(classes)
    if not root.is_dir():
        raise ConfigError(f"{root} is not a folder: give a folder holding one sub-folder of images per class "
                          f"({expected})")
    folders = {d.name: image_files(d) for d in visible_subdirs(root)}
    folders = {name: files for name, files in folders.items() if files}
    loose = sorted(f.path for f in list_dir(root, root).files if is_image_name(f.path.name))
    if not folders:
        raise ConfigError(f"{root} has no class folders with images: put each class's images in "
                          f"{root}/<class>/, one folder per class of the model ({expected})"
                          + (f"; its {len(loose)} images outside any class folder are not labelled" if loose else ""))
    unknown = sorted(set(folders) - set(classes))
    if unknown:
        raise ConfigError(f"{root}: the class folder(s) {', '.join(unknown)} match no class of the model "
                          f"({expected}); rename them to the model's class names or move them out")
    files: list[Path] = []
    labels: list[int] = []
    for index, name in enumerate(classes):
        for path in folders.get(name, []):
            files.append(path)
            labels.append(index)
    return LabelledImages(root=root, classes=classes, files=files, labels=labels,
                          missing=[c for c in classes if c not in folders], loose=loose)


@dataclass
class FolderScore:
    """The outcome of scoring a labelled folder: metrics, per-class counts, what was skipped and why."""

    metrics: dict[str, Any]
    counts: dict[str, int]
    #: (image path relative to the folder, why it could not be read), in path order.
    unreadable: list[tuple[str, str]]


def score_folder(classifier: Any, images: LabelledImages, out_dir: Path, batch_size: int = 256) -> FolderScore:
    """Score ``classifier`` (a ``maskcls.inference.Classifier``) on ``images``; write the evaluation
    files (confusion matrix, report, misclassified grid, predictions) into ``out_dir``.

    Unreadable images are skipped and listed; a folder with no readable image is a ConfigError.
    """
    from maskcls.evaluate import write_evaluation

    arrays: list[np.ndarray] = []
    kept: list[int] = []
    unreadable: list[tuple[str, str]] = []
    for k, path in enumerate(images.files):
        rel = path.relative_to(images.root).as_posix()
        try:
            arrays.append(preprocess_bytes(read_regular(path), classifier.preprocess))
            kept.append(k)
        except DecodeError as exc:
            unreadable.append((rel, str(exc)))
        except OSError as exc:
            unreadable.append((rel, exc.strerror or str(exc)))
    if not arrays:
        raise ConfigError(f"none of the {len(images.files)} images in {images.root} could be read as an image")
    x = np.stack(arrays)
    proba = np.concatenate([classifier.proba(x[start:start + batch_size]) for start in range(0, len(x), batch_size)])
    y = np.asarray([images.labels[k] for k in kept])
    paths = [images.files[k].relative_to(images.root).as_posix() for k in kept]
    metrics = write_evaluation(y, proba, images.classes, x, paths, {}, out_dir)
    # No training here: write_evaluation's (empty) training curves say nothing about this folder.
    (out_dir / "training_curves.png").unlink(missing_ok=True)
    counts = {c: int((y == i).sum()) for i, c in enumerate(images.classes)}
    return FolderScore(metrics=metrics, counts=counts, unreadable=unreadable)
