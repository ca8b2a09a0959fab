"""Stage `preprocess`: each side of the split to uint8 arrays in the store."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task

from maskcls.config import PreprocessConfig, Settings
from maskcls.data import Split, labels_of
from maskcls.preprocess import preprocess_files
from maskcls.store import Store
from tasks.caching import StageCache
from tasks.progress import progress
from tasks.records import ArraysRecord, SideArrays


@task(name="preprocess", cache_policy=StageCache(stage="preprocess", inputs=("split_", "cfg")))
def preprocess(split_: Split, cfg: PreprocessConfig, settings: Settings) -> ArraysRecord:
    """Each side to (n, size, size, channels) uint8 arrays in the store (on MASKCLS_DATA_THREADS threads)."""
    store = Store(settings.store_dir)
    sides: dict[str, SideArrays] = {}
    for side in ("train", "val", "test"):
        items = split_.side(side)
        paths = [i.path for i in items]
        x = preprocess_files(Path(split_.root), paths, cfg, progress=progress(f"preprocessed {side}"),
                             workers=settings.data_threads)
        y = labels_of(items, split_.classes)
        sides[side] = SideArrays(
            x=store.put_array("arrays", x), y=store.put_array("arrays", y),
            paths=paths, sha256=[i.sha256 for i in items],
        )
    get_run_logger().info(f"preprocessed to {cfg.size}x{cfg.size} {cfg.color_mode}: "
                          + ", ".join(f"{k} {len(v.paths)}" for k, v in sides.items()))
    return ArraysRecord(classes=split_.classes, root=split_.root, split_fingerprint=split_.fingerprint,
                        preprocess=cfg, sides=sides, val_after_augment=split_.val_after_augment,
                        val_seed=split_.val_seed)
