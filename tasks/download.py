"""Stage `download`: fetch the dataset (URL, zip, folder, or several parts) and find its class folders."""

from __future__ import annotations

from prefect import get_run_logger, task

from maskcls.config import Settings
from maskcls.multisource import fetch_sources, split_sources
from maskcls.source import SourceData, SourceError
from tasks.caching import StageCache


def _not_a_source_error(task, task_run, state) -> bool:
    """Retry the download task only for unexpected errors: a SourceError already retried what
    can be retried (network) and is otherwise final (bad zip, HTML, pin mismatch)."""
    try:
        state.result()
    except SourceError:
        return False
    except Exception:  # noqa: BLE001
        return True
    return False


@task(name="download", cache_policy=StageCache(stage="download", inputs=("source", "identity", "crop_margin")),
      retries=1, retry_condition_fn=_not_a_source_error)
def download(source: str | list[str], identity: str, settings: Settings, crop_margin: float = 0.2) -> SourceData:
    """Fetch the dataset (URL, zip or folder; or several parts, voc: folders cut into face crops)
    and find its class folders."""
    raw = fetch_sources(split_sources(source), settings.downloads_dir, crop_margin=crop_margin,
                        pin_for=settings.pin_for, progress=False, timeout=settings.download_timeout_s)
    get_run_logger().info(f"source {raw.source} ({raw.kind}) -> {raw.root}")
    return raw
