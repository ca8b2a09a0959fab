"""Register every deployment in maskcls/names.py on the `maskcls` process work pool.

Run by `python -m stack up` and by docker-compose's one-shot `deploy` service:
`python flows/deploy.py` (PREFECT_API_URL must point at the server).

- `train-face-mask/on-demand`: no schedule; pressed from the UI's run form,
  whose fields (with descriptions) come from `train_flow`'s signature and docstring.
- `train-face-mask/scheduled-retrain`: cron `MASKCLS_RETRAIN_CRON`
  (default weekly, "0 3 * * 0") in `MASKCLS_RETRAIN_TZ` (default UTC).
- `train-face-mask/sweep-member`: one point of a sweep, no concurrency limit.
- `sweep-face-mask/sweep`: a grid of training runs on the pool's workers.
- `scan-photos/on-demand`: scan a folder's new photos, pressed from the UI.
- `scan-photos/scan-inbox`: scan `MASKCLS_SCAN_INBOX` on the cron `MASKCLS_SCAN_CRON` (UTC).

All of them load their flow from this project directory (`flow.from_source` with a
local path: no image is built and nothing is pushed; the process worker runs it
from the same path); all but sweep-member allow one run at a time, cancelling a
new run while one runs. Re-running this script updates the deployments in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

import typer
from prefect import flow
from prefect.client.schemas.objects import (
    ConcurrencyLimitConfig,
    ConcurrencyLimitStrategy,
)
from prefect.schedules import Cron

from maskcls.config import Settings
from maskcls.names import (
    FLOW_NAME,
    ON_DEMAND,
    POOL_ONLY_FLAG,
    SCAN_FLOW_NAME,
    SCAN_INBOX,
    SCAN_ON_DEMAND,
    SCHEDULED,
    SWEEP,
    SWEEP_FLOW_NAME,
    SWEEP_MEMBER,
)
from tasks import prefect_api

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ENTRYPOINT = "flows/train.py:train_flow"
SWEEP_ENTRYPOINT = "flows/sweep.py:sweep_flow"
SCAN_ENTRYPOINT = "flows/scan.py:scan_flow"
TAGS = ["maskcls"]


@dataclass(frozen=True)
class DeploySettings:
    """What the deployments are made of; built from the entry point's `Settings` by `from_settings`."""

    pool: str
    #: None: the run form leaves the source empty (the worker's MASKCLS_DATA_SOURCE or the pinned default).
    data_source: str | None
    retrain_cron: str
    retrain_timezone: str
    scan_inbox: Path
    scan_cron: str
    project_root: Path = PROJECT_ROOT
    entrypoint: str = ENTRYPOINT

    @classmethod
    def from_settings(cls, settings: Settings) -> DeploySettings:
        """MASKCLS_WORK_POOL, MASKCLS_DATA_SOURCE, MASKCLS_RETRAIN_CRON, MASKCLS_RETRAIN_TZ,
        MASKCLS_SCAN_INBOX, MASKCLS_SCAN_CRON."""
        return cls(
            pool=settings.work_pool,
            data_source=settings.data_source_given,
            retrain_cron=settings.retrain_cron,
            retrain_timezone=settings.retrain_tz,
            scan_inbox=settings.inbox,
            scan_cron=settings.scan_cron,
        )

    def default_parameters(self) -> dict[str, Any]:
        """Defaults shown in the run form: the worker's data source (a list of parts), so Run works offline."""
        from maskcls.multisource import split_sources

        return {"source": split_sources(self.data_source)} if self.data_source else {}


def concurrency_limit() -> ConcurrencyLimitConfig:
    """One run per deployment; a run that arrives while one runs is cancelled, not queued.

    Queueing (Prefect's default ENQUEUE) would stack up weekly retrains behind a
    stuck run and retrain on the same data twice.
    """
    return ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW)


def deploy_all(settings: DeploySettings) -> dict[tuple[str, str], UUID]:
    """Create or update every deployment of maskcls.names.DEPLOYMENTS; their ids by (flow, deployment)."""
    prefect_api.ensure_work_pool(settings.pool)
    train_flow = flow.from_source(source=str(settings.project_root), entrypoint=settings.entrypoint)
    common: dict[str, Any] = dict(
        work_pool_name=settings.pool,
        parameters=settings.default_parameters(),
        concurrency_limit=concurrency_limit(),
        tags=TAGS,
        # Process pool + local source: nothing to build or push.
        build=False,
        push=False,
        print_next_steps=False,
        # Silences the "use .serve for process pools" hint: workers are the point here.
        ignore_warnings=True,
    )
    return {
        (FLOW_NAME, ON_DEMAND): train_flow.deploy(
            name=ON_DEMAND,
            description=(
                "Train the face-mask classifier on demand. Pick a profile "
                "(smoke, default, seed), a data source and training settings in "
                "the run form; the model is registered in MLflow and becomes "
                "`champion` only if it beats the current one."
            ),
            **common,
        ),
        (FLOW_NAME, SCHEDULED): train_flow.deploy(
            name=SCHEDULED,
            description=(
                f"Retrain on a schedule ({settings.retrain_cron}, "
                f"{settings.retrain_timezone}). Unchanged data, config and code "
                "finish from the cache and register nothing; changed data "
                "retrains and promotes only if better."
            ),
            schedule=Cron(settings.retrain_cron, timezone=settings.retrain_timezone),
            **common,
        ),
        (FLOW_NAME, SWEEP_MEMBER): train_flow.deploy(
            name=SWEEP_MEMBER,
            description=(
                f"One point of a sweep (started by {SWEEP_FLOW_NAME}, nested under its "
                "MLflow run). No concurrency limit: the pool's workers run points side by side."
            ),
            **{**common, "concurrency_limit": None},
        ),
        (SWEEP_FLOW_NAME, SWEEP): flow.from_source(
            source=str(settings.project_root), entrypoint=SWEEP_ENTRYPOINT
        ).deploy(
            name=SWEEP,
            description=(
                "Train every combination of a grid of settings as parallel "
                f"{FLOW_NAME}/{SWEEP_MEMBER} runs, nested under one MLflow run; each "
                "becomes `champion` only if it beats the current one. This run holds "
                "one worker slot while it waits: the pool needs more than one worker "
                "(`maskcls sweep` runs it from the CLI instead)."
            ),
            **common,
        ),
        **_scan_deployments(settings, common),
    }


def _scan_deployments(settings: DeploySettings, common: dict[str, Any]) -> dict[tuple[str, str], UUID]:
    """scan-photos on demand (any folder) and on the inbox's schedule."""
    scan_flow = flow.from_source(source=str(settings.project_root), entrypoint=SCAN_ENTRYPOINT)
    return {
        (SCAN_FLOW_NAME, SCAN_ON_DEMAND): scan_flow.deploy(
            name=SCAN_ON_DEMAND,
            description=(
                "Find every face in the photos of a folder, label each with the scanner champion "
                "(face-mask-scanner, or -3class with MASKCLS_SCANNER_CLASSES=3) and count the masked "
                "share; photos this scanner version has scanned before are skipped. Results, annotated "
                "photos and the share over time go to MLflow's face-mask-scans experiment."
            ),
            **{**common, "parameters": {}},
        ),
        (SCAN_FLOW_NAME, SCAN_INBOX): scan_flow.deploy(
            name=SCAN_INBOX,
            description=(
                f"Scan the new photos of {settings.scan_inbox} on a schedule ({settings.scan_cron}, UTC). "
                "An unchanged inbox scans nothing and says so; a new scanner champion rescans everything."
            ),
            schedule=Cron(settings.scan_cron, timezone="UTC"),
            **{**common, "parameters": {"folder": str(settings.scan_inbox)}},
        ),
    }


app = typer.Typer(add_completion=False)


@app.command(help=__doc__.splitlines()[0])
def deploy(
    pool_only: Annotated[
        bool, typer.Option(POOL_ONLY_FLAG, help="Only create the work pool (used before workers start).")
    ] = False,
) -> None:
    """Register the deployments (or only the work pool), with settings read from the environment here."""
    settings = DeploySettings.from_settings(Settings.from_env())
    if pool_only:
        created = prefect_api.ensure_work_pool(settings.pool)
        typer.echo(f"work pool {settings.pool!r} {'created' if created else 'exists'}")
        return
    for (flow_name, name), deployment_id in deploy_all(settings).items():
        typer.echo(f"deployment {flow_name}/{name}: {deployment_id}")
    if settings.data_source:
        typer.echo(f"default source: {settings.data_source}")


if __name__ == "__main__":
    app()
