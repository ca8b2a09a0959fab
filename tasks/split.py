"""Stage `split`: train / validation / test by near-duplicate cluster, before any augmentation."""

from __future__ import annotations

from prefect import get_run_logger, task

from maskcls import data as mdata
from maskcls.config import DataConfig
from tasks.caching import StageCache


@task(name="split", cache_policy=StageCache(stage="split", inputs=("manifest", "cfg")))
def split(manifest: mdata.Manifest, cfg: DataConfig) -> mdata.Split:
    """Train / validation / test by near-duplicate cluster, before any augmentation."""
    result = mdata.split(manifest, cfg)
    get_run_logger().info(f"{result.n_clusters} clusters; sides: {result.counts()}")
    return result
