"""One Prefect task per pipeline stage: a thin wrapper around one maskcls call.

Tasks pass small typed records (paths, fingerprints, counts), never image arrays.
Each cached record has ``verify()``, checked before a cache hit is trusted.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from maskcls import augment as aug
from maskcls import data as mdata
from maskcls.config import (
    DEFAULT_PIN,
    DEFAULT_SOURCE,
    AugmentConfig,
    DataConfig,
    PipelineConfig,
    PreprocessConfig,
    Settings,
    TrainConfig,
)
from maskcls.store import FileRef, Store, load_array
from tasks.caching import StageCache

# The modules each stage uses directly.
_OWN_MODULES: dict[str, tuple[str, ...]] = {
    "download": ("maskcls.source",),
    "validate": ("maskcls.data", "maskcls.preprocess"),
    "split": ("maskcls.data",),
    "preprocess": ("maskcls.preprocess",),
    "augment": ("maskcls.augment", "maskcls.evaluate"),
    "train": ("maskcls.model", "maskcls.train"),
    "evaluate": ("maskcls.evaluate", "maskcls.model"),
    "register": ("maskcls.inference", "maskcls.preprocess", "tasks.pyfunc_model", "tasks.tracking", "tasks.promotion"),
}


def _cumulative(own: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """A stage's code version covers its own modules and those of every stage before it,
    so editing a module reruns the stages that use it and everything after them (even
    when the edit leaves an upstream output byte-identical), and nothing before them."""
    out: dict[str, tuple[str, ...]] = {}
    seen: tuple[str, ...] = ()
    for name, modules in own.items():
        seen = tuple(dict.fromkeys(seen + modules))
        out[name] = seen
    return out


#: The modules whose source text makes up each stage's code version (in pipeline order).
STAGE_MODULES: dict[str, tuple[str, ...]] = _cumulative(_OWN_MODULES)


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True)

    def refs(self) -> list[FileRef]:
        return []

    def verify(self) -> bool:
        return all(ref.verify() for ref in self.refs())


class SideArrays(BaseModel):
    model_config = ConfigDict(frozen=True)

    x: FileRef
    y: FileRef
    paths: list[str]
    sha256: list[str]


class ArraysRecord(_Record):
    classes: list[str]
    root: str
    split_fingerprint: str
    preprocess: PreprocessConfig
    sides: dict[str, SideArrays]

    def refs(self) -> list[FileRef]:
        return [r for s in self.sides.values() for r in (s.x, s.y)]


class AugmentedRecord(_Record):
    x: FileRef
    y: FileRef
    n_images: int
    n_samples: int
    preview: FileRef | None

    def refs(self) -> list[FileRef]:
        return [self.x, self.y] + ([self.preview] if self.preview else [])


class ModelRecord(_Record):
    model: FileRef
    history: dict[str, list[float]]
    epoch_seconds: list[float]
    samples_per_s: float
    n_params: int
    n_train_samples: int
    trained_in_run: str

    def refs(self) -> list[FileRef]:
        return [self.model]


class EvalRecord(_Record):
    metrics: dict[str, float]
    files: dict[str, FileRef]

    def refs(self) -> list[FileRef]:
        return list(self.files.values())


class RegisterRecord(_Record):
    version: str | None
    promotion: str
    reason: str
    model_uri: str | None


def _logger():
    return get_run_logger()


def _progress(label: str):
    log = _logger()
    return lambda done, total: log.info(f"{label}: {done}/{total}")


def _not_a_source_error(task, task_run, state) -> bool:
    """Retry the download task only for unexpected errors: a SourceError already retried what
    can be retried (network) and is otherwise final (bad zip, HTML, pin mismatch)."""
    from maskcls.source import SourceError

    try:
        state.result()
    except SourceError:
        return False
    except Exception:  # noqa: BLE001
        return True
    return False


@task(name="download", cache_policy=StageCache(stage="download", modules=STAGE_MODULES["download"],
                                               inputs=("source", "identity")), retries=1,
      retry_condition_fn=_not_a_source_error)
def download(source: str, identity: str, settings: Settings):
    """Fetch the dataset (URL, zip or folder) and find its class folders."""
    from maskcls.source import fetch_source

    raw = fetch_source(source, settings.downloads_dir, pin=settings.pin_for(source), progress=False,
                       timeout=settings.download_timeout_s)
    _logger().info(f"source {source} ({raw.kind}) -> {raw.root}")
    return raw


@task(name="validate", cache_policy=StageCache(stage="validate", modules=STAGE_MODULES["validate"],
                                               inputs=("raw", "cfg")))
def validate(raw: Any, cfg: DataConfig) -> mdata.Manifest:
    """Decode every file once; keep readable images, each content once."""
    manifest = mdata.validate(Path(raw.root), cfg, progress=_progress("validated"))
    _logger().info(
        f"kept {len(manifest.items)} images {manifest.counts}; left out {len(manifest.skipped)} "
        f"unreadable or misplaced files and {len(manifest.duplicates)} exact duplicates"
    )
    for s in manifest.skipped[:20]:
        _logger().warning(f"skipped {s.path}: {s.reason}")
    return manifest


@task(name="split", cache_policy=StageCache(stage="split", modules=STAGE_MODULES["split"],
                                            inputs=("manifest", "cfg")))
def split(manifest: mdata.Manifest, cfg: DataConfig) -> mdata.Split:
    """Train / validation / test by near-duplicate cluster, before any augmentation."""
    result = mdata.split(manifest, cfg)
    _logger().info(f"{result.n_clusters} clusters; sides: {result.counts()}")
    return result


@task(name="preprocess", cache_policy=StageCache(stage="preprocess", modules=STAGE_MODULES["preprocess"],
                                                 inputs=("split_", "cfg")))
def preprocess(split_: mdata.Split, cfg: PreprocessConfig, settings: Settings) -> ArraysRecord:
    """Each side to (n, size, size, channels) uint8 arrays in the store."""
    from maskcls.preprocess import preprocess_files

    store = Store(settings.store_dir)
    sides: dict[str, SideArrays] = {}
    for side in ("train", "val", "test"):
        items = split_.side(side)
        paths = [i.path for i in items]
        x = preprocess_files(Path(split_.root), paths, cfg, progress=_progress(f"preprocessed {side}"))
        y = mdata.labels_of(items, split_.classes)
        sides[side] = SideArrays(
            x=store.put_array("arrays", x), y=store.put_array("arrays", y),
            paths=paths, sha256=[i.sha256 for i in items],
        )
    _logger().info(f"preprocessed to {cfg.size}x{cfg.size} {cfg.color_mode}: "
                   + ", ".join(f"{k} {len(v.paths)}" for k, v in sides.items()))
    return ArraysRecord(classes=split_.classes, root=split_.root, split_fingerprint=split_.fingerprint,
                        preprocess=cfg, sides=sides)


@task(name="augment", cache_policy=StageCache(stage="augment", modules=STAGE_MODULES["augment"],
                                              inputs=("arrays", "cfg")))
def augment(arrays: ArraysRecord, cfg: AugmentConfig, settings: Settings) -> AugmentedRecord:
    """The 32 variants of every training image, written as uint8 .npy."""
    from maskcls.evaluate import image_grid

    store = Store(settings.store_dir)
    train = arrays.sides["train"]
    x = load_array(train.x)
    y = load_array(train.y)
    if not cfg.enabled:
        _logger().info("augmentation disabled: training on the original images")
        return AugmentedRecord(x=train.x, y=train.y, n_images=len(x), n_samples=len(x), preview=None)
    x_ref = store.put("augmented", ".npy", lambda p: aug.augment_to_file(
        x, cfg.shift, p, progress=_progress("augmented images")))
    y_ref = store.put_array("augmented", aug.augment_labels(y))
    sample = aug.augment_batch(np.asarray(x[:4]), cfg.shift)
    names = ["+".join(op for op, on in zip(aug.OPERATIONS, flags) if on) or "original" for flags in aug.VARIANTS]
    with tempfile.TemporaryDirectory() as tmp:
        grid = Path(tmp) / "augmentation_preview.png"
        image_grid(sample, names * 4, grid, cols=16, title="The 32 variants of 4 training images")
        preview = store.put_file("previews", grid)
    n = aug.augmented_count(len(x))
    _logger().info(f"augmented {len(x)} training images into {n} samples (32 each, shift {cfg.shift}px)")
    return AugmentedRecord(x=x_ref, y=y_ref, n_images=len(x), n_samples=n, preview=preview)


@task(name="train", cache_policy=StageCache(stage="train", modules=STAGE_MODULES["train"],
                                            inputs=("arrays", "augmented", "cfg")))
def train(arrays: ArraysRecord, augmented: AugmentedRecord, cfg: TrainConfig, settings: Settings,
          run_id: str, tracking_uri: str) -> ModelRecord:
    """Fit the CNN; per-epoch metrics go to the MLflow run as they happen."""
    from maskcls.train import train_model
    from tasks.tracking import configure, epoch_logger

    client = configure(settings)
    val = arrays.sides["val"]
    x_val = load_array(val.x, mmap=False) if val.paths else None
    y_val = load_array(val.y, mmap=False) if val.paths else None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model.keras"
        result = train_model(
            load_array(augmented.x), load_array(augmented.y), x_val, y_val, cfg,
            n_classes=len(arrays.classes), out_path=out,
            callbacks=[epoch_logger(client, run_id)], log=_logger().info,
        )
        model_ref = Store(settings.store_dir).put_file("models", out)
    return ModelRecord(
        model=model_ref, history=result["history"], epoch_seconds=result["epoch_seconds"],
        samples_per_s=result["samples_per_s"], n_params=result["n_params"],
        n_train_samples=augmented.n_samples, trained_in_run=run_id,
    )


@task(name="evaluate", cache_policy=StageCache(stage="evaluate", modules=STAGE_MODULES["evaluate"],
                                               inputs=("model", "arrays")))
def evaluate(model: ModelRecord, arrays: ArraysRecord, settings: Settings) -> EvalRecord:
    """Score the held-out test side: metrics, confusion matrix, report and figures."""
    from maskcls.evaluate import write_evaluation
    from maskcls.model import predict_proba
    from maskcls.train import load_model

    test = arrays.sides["test"]
    x = load_array(test.x, mmap=False)
    y = load_array(test.y)
    keras_model = load_model(model.model.check())
    proba = predict_proba(keras_model, x.astype(np.float32) / 255.0)
    store = Store(settings.store_dir)
    with tempfile.TemporaryDirectory() as tmp:
        metrics = write_evaluation(y, proba, arrays.classes, x, test.paths, model.history, Path(tmp))
        files = {p.name: store.put_file("evaluation", p) for p in sorted(Path(tmp).iterdir())}
    _logger().info("test metrics: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    return EvalRecord(metrics={f"test_{k}": v for k, v in metrics.items()}, files=files)


@task(name="register", cache_policy=StageCache(stage="register", modules=STAGE_MODULES["register"],
                                               inputs=("model", "evaluation", "arrays", "tracking_uri")))
def register(model: ModelRecord, evaluation: EvalRecord, arrays: ArraysRecord, config: PipelineConfig,
             settings: Settings, run_id: str, tracking_uri: str) -> RegisterRecord:
    """Log the pyfunc, make a new model version, and promote it if it beats the champion."""
    from tasks.promotion import register_and_promote

    return register_and_promote(model, evaluation, arrays, config, settings, run_id, _logger())


@task(name="log-data", cache_policy=NO_CACHE)
def log_data(run_id: str, settings: Settings, source: str, raw: Any, manifest: mdata.Manifest,
             split_: mdata.Split, augmented: AugmentedRecord) -> None:
    """Fingerprints, counts, the validation report and the dataset input: on every run."""
    from tasks import tracking

    client = tracking.configure(settings)
    counts = split_.counts()
    client.set_tag(run_id, "dataset_fingerprint", manifest.fingerprint)
    tracking.log_params(client, run_id, {
        "dataset_fingerprint": manifest.fingerprint,
        "source": source,
        "source_kind": raw.kind,
        "classes": ",".join(manifest.classes),
        "n_images": len(manifest.items),
        "n_skipped": len(manifest.skipped),
        "n_duplicates": len(manifest.duplicates),
        "n_clusters": split_.n_clusters,
        **{f"n_{side}": sum(c.values()) for side, c in counts.items()},
        "n_train_samples": augmented.n_samples,
    })
    tracking.log_json(client, run_id, manifest.report(), "validation_report.json")
    tracking.log_json(client, run_id, {"counts": counts, "n_clusters": split_.n_clusters,
                                       "fingerprint": split_.fingerprint}, "split.json")
    tracking.log_dataset(client, run_id, [i.model_dump(include={"path", "label", "sha256"}) for i in manifest.items],
                         source=source, digest=manifest.fingerprint)
    if augmented.preview is not None:
        tracking.log_file(client, run_id, Path(augmented.preview.check()), "augmentation_preview.png")


@task(name="log-results", cache_policy=NO_CACHE)
def log_results(run_id: str, settings: Settings, model: ModelRecord, evaluation: EvalRecord,
                from_cache: bool) -> None:
    """Metrics and evaluation files into this run, whether or not they were computed in it."""
    from tasks import tracking

    client = tracking.configure(settings)
    if model.trained_in_run != run_id:
        tracking.log_history(client, run_id, model.history)
    tracking.log_metrics(client, run_id, {
        **evaluation.metrics, "train_samples_per_s": model.samples_per_s,
    })
    tracking.log_params(client, run_id, {"n_params": model.n_params})
    for name, ref in evaluation.files.items():
        tracking.log_file(client, run_id, Path(ref.check()), name)
    tracking.log_json(client, run_id, {"history": model.history, "epoch_seconds": model.epoch_seconds},
                      "history.json")
