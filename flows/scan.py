"""The scan flow: list the new images of a folder, scan them in batches with the registered
scanner champion, summarise, log one MLflow run in `face-mask-scans`."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any

from prefect import flow
from pydantic import Field

from maskcls.config import Settings
from maskcls.names import SCAN_FLOW_NAME
from tasks import tracking
from tasks.scan import (
    list_new_images,
    log_scan,
    open_scan,
    remember,
    scan_batch,
    summarise,
)


@flow(name=SCAN_FLOW_NAME, log_prints=True)
def scan_flow(
    folder: str | None = None,
    batch_size: Annotated[int, Field(ge=1)] = 16,
    blur: bool = False,
    whole_image: bool = False,
    rescan: bool = False,
) -> dict[str, Any]:
    """Find every face in the new photos of a folder, label it, count how many wear masks.

    Args:
        folder: Folder of photos (walked recursively); empty uses MASKCLS_SCAN_INBOX ($MASKCLS_HOME/inbox).
        batch_size: Photos sent to the scanner in one call.
        blur: Blur every face in the annotated copies logged to MLflow.
        whole_image: With no face found, classify the whole image (for close crops).
        rescan: Scan every photo again, even those this scanner version has already scanned.
    """
    settings = Settings.from_env()
    folder = folder or str(settings.inbox)
    client, run_id, scanner = open_scan(settings, folder)
    scan_settings = {"whole_image": whole_image}
    ok = False
    try:
        with tempfile.TemporaryDirectory(prefix="scan-") as tmp:
            out = Path(tmp)
            listing = list_new_images(folder, scanner, scan_settings, settings, rescan)
            batches = [listing.new[i:i + batch_size] for i in range(0, len(listing.new), batch_size)]
            scanned = [s for batch in batches
                       for s in scan_batch(batch, scanner, scan_settings, settings, out / "images", blur)]
            summary = summarise(scanned, listing, out)
            deleted = log_scan(settings, run_id, scanner, listing, summary, scanned, out)
            remember(scanned, settings)
        ok = True
        return {
            "mlflow_run_id": run_id,
            "scanner": scanner.name,
            "scanner_version": scanner.version,
            "scanned": [p.rel for p in listing.new],
            "cached": [p.rel for p in listing.cached],
            "batches": len(batches),
            "nothing_new": not listing.new,
            "summary": summary,
            "deleted_runs": deleted,
        }
    finally:
        tracking.end_run(client, run_id, ok)


if __name__ == "__main__":
    scan_flow()
