"""Stage `download`: fetch the dataset (URL, zip or folder) and find its class folders."""

from __future__ import annotations

from prefect import get_run_logger, task

from maskcls.config import Settings
from maskcls.source import SourceData, SourceError, fetch_source
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


@task(name="download", cache_policy=StageCache(stage="download", inputs=("source", "identity")), retries=1,
      retry_condition_fn=_not_a_source_error)
def download(source: str, identity: str, settings: Settings) -> SourceData:
    """Fetch the dataset (URL, zip or folder) and find its class folders."""
    raw = fetch_source(source, settings.downloads_dir, pin=settings.pin_for(source), progress=False,
                       timeout=settings.download_timeout_s)
    get_run_logger().info(f"source {source} ({raw.kind}) -> {raw.root}")
    return raw
