"""Stage `validate`: decode every file once; keep readable images, each content once."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task

from maskcls import data as mdata
from maskcls.config import DataConfig, Settings
from maskcls.source import SourceData
from tasks.caching import StageCache
from tasks.progress import progress


@task(name="validate", cache_policy=StageCache(stage="validate", inputs=("raw", "cfg")))
def validate(raw: SourceData, cfg: DataConfig, settings: Settings) -> mdata.Manifest:
    """Decode every file once (on MASKCLS_DATA_THREADS threads); keep readable images, each content once."""
    log = get_run_logger()
    manifest = mdata.validate(Path(raw.root), cfg, progress=progress("validated"),
                              workers=settings.data_threads)
    log.info(
        f"kept {len(manifest.items)} images {manifest.counts}; left out {len(manifest.skipped)} "
        f"unreadable or misplaced files and {len(manifest.duplicates)} exact duplicates"
    )
    for s in manifest.skipped[:20]:
        log.warning(f"skipped {s.path}: {s.reason}")
    return manifest
