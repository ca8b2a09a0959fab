"""Stage `augment`: the 32 variants of every training image, written as uint8 .npy."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from prefect import get_run_logger, task

from maskcls import augment as aug
from maskcls.config import AugmentConfig, Settings
from maskcls.store import FileRef, Store, load_array
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
    if arrays.val_after_augment:
        x_ref, y_ref, val_x, val_y, n_val = _augment_then_take_validation(store, x, y, cfg, arrays)
        log.info(f"article protocol: {n_val} of the augmented samples are validation "
                 f"({arrays.val_after_augment:.0%}, variants of one image on both sides)")
    else:
        x_ref = store.put("augmented", ".npy", lambda p: aug.augment_to_file(
            x, cfg.shift, p, progress=progress("augmented images")))
        y_ref = store.put_array("augmented", aug.augment_labels(y))
        val_x = val_y = None
        n_val = 0
    sample = aug.augment_batch(np.asarray(x[:4]), cfg.shift)
    names = ["+".join(op for op, on in zip(aug.OPERATIONS, flags) if on) or "original" for flags in aug.VARIANTS]
    with tempfile.TemporaryDirectory() as tmp:
        grid = Path(tmp) / "augmentation_preview.png"
        image_grid(sample, names * 4, grid, cols=16, title="The 32 variants of 4 training images")
        preview = store.put_file("previews", grid)
    n = aug.augmented_count(len(x)) - n_val
    log.info(f"augmented {len(x)} training images into {n} training samples (32 each, shift {cfg.shift}px)")
    return AugmentedRecord(x=x_ref, y=y_ref, n_images=len(x), n_samples=n, preview=preview,
                           val_x=val_x, val_y=val_y, n_val_samples=n_val)


def _augment_then_take_validation(store: Store, x: np.ndarray, y: np.ndarray, cfg: AugmentConfig,
                                  arrays: ArraysRecord) -> tuple[FileRef, FileRef, FileRef, FileRef, int]:
    """The article's validation: augment every training image, then hold out a share of the samples."""
    y_aug = aug.augment_labels(y)
    train_idx, val_idx = aug.validation_after_augment(y_aug, arrays.val_after_augment, arrays.val_seed)
    store.root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=store.root, prefix=".augment-") as tmp:
        full_path = Path(tmp) / "all.npy"
        aug.augment_to_file(x, cfg.shift, full_path, progress=progress("augmented images"))
        full = np.load(full_path, mmap_mode="r")
        refs = tuple(store.put("augmented", ".npy", lambda p, idx=idx: aug.take_to_file(full, idx, p))
                     for idx in (train_idx, val_idx))
        del full
    return (refs[0], store.put_array("augmented", y_aug[train_idx]),
            refs[1], store.put_array("augmented", y_aug[val_idx]), len(val_idx))
