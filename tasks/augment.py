"""Stage `augment`: the 32 variants of every training image, written as uint8 .npy."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from prefect import get_run_logger, task

from maskcls import augment as aug
from maskcls.config import AugmentConfig, Settings
from maskcls.store import Store, load_array
from tasks.caching import StageCache
from tasks.progress import progress
from tasks.records import ArraysRecord, AugmentedRecord


@task(name="augment", cache_policy=StageCache(stage="augment", inputs=("arrays", "cfg")))
def augment(arrays: ArraysRecord, cfg: AugmentConfig, settings: Settings) -> AugmentedRecord:
    """The 32 variants of every training image, written as uint8 .npy."""
    from maskcls.evaluate import image_grid  # matplotlib, scikit-learn: not loaded on a cached run

    log = get_run_logger()
    store = Store(settings.store_dir)
    train = arrays.sides["train"]
    x = load_array(train.x)
    y = load_array(train.y)
    if not cfg.enabled:
        log.info("augmentation disabled: training on the original images")
        return AugmentedRecord(x=train.x, y=train.y, n_images=len(x), n_samples=len(x), preview=None)
    x_ref = store.put("augmented", ".npy", lambda p: aug.augment_to_file(
        x, cfg.shift, p, progress=progress("augmented images")))
    y_ref = store.put_array("augmented", aug.augment_labels(y))
    sample = aug.augment_batch(np.asarray(x[:4]), cfg.shift)
    names = ["+".join(op for op, on in zip(aug.OPERATIONS, flags) if on) or "original" for flags in aug.VARIANTS]
    with tempfile.TemporaryDirectory() as tmp:
        grid = Path(tmp) / "augmentation_preview.png"
        image_grid(sample, names * 4, grid, cols=16, title="The 32 variants of 4 training images")
        preview = store.put_file("previews", grid)
    n = aug.augmented_count(len(x))
    log.info(f"augmented {len(x)} training images into {n} samples (32 each, shift {cfg.shift}px)")
    return AugmentedRecord(x=x_ref, y=y_ref, n_images=len(x), n_samples=n, preview=preview)
