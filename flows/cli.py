"""`maskcls` command line: train, predict, cache prune."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Train, track and use the face-mask classifier.")
cache_app = typer.Typer(no_args_is_help=True, help="Manage the content-addressed store under MASKCLS_HOME.")
app.add_typer(cache_app, name="cache")
err = Console(stderr=True)


def _fail(message: str, code: int = 1) -> None:
    err.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    raise typer.Exit(code)


@app.command()
def train(
    profile: Annotated[str, typer.Option(help="default | seed | smoke")] = "default",
    source: Annotated[Optional[str], typer.Option(help="Folder, zip or http(s) URL of a zip "
                                                  "(default: MASKCLS_DATA_SOURCE, else the pinned archive)")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Override train.epochs")] = None,
    learning_rate: Annotated[Optional[float], typer.Option(help="Override train.learning_rate")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Override train.batch_size")] = None,
    max_images: Annotated[Optional[int], typer.Option(help="Override data.max_images")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Any setting: section.field=value "
                                                      "(repeatable), e.g. --set train.dense_units=128")] = None,
    refresh: Annotated[bool, typer.Option("--refresh", help="Recompute every stage, ignoring the cache")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON")] = False,
) -> None:
    """Run the training flow (download, validate, split, preprocess, augment, train, evaluate, register)."""
    from maskcls.config import ConfigError, load_config, parse_overrides

    try:
        overrides = parse_overrides(set_)
        load_config(profile, overrides)  # fail fast on a bad profile or setting
    except ConfigError as exc:
        _fail(str(exc), 2)
    _isolate_prefect_home()
    from flows.train import train_flow

    try:
        result = train_flow(profile=profile, source=source, epochs=epochs, learning_rate=learning_rate,
                            batch_size=batch_size, max_images=max_images, refresh=refresh,
                            overrides={k: json.dumps(v) if not isinstance(v, str) else v
                                       for k, v in overrides.items()})
    except Exception as exc:  # noqa: BLE001 - one readable paragraph, the traceback is in Prefect's log
        _fail(_explain(exc))
        return
    if json_out:
        print(json.dumps(result, indent=2, default=str))
        return
    m = result["metrics"]
    status = "all stages cached, nothing registered" if result["cache_hit"] else (
        f"version {result['model_version']}: {result['promotion']}")
    Console().print(
        f"[bold green]done[/] profile={profile} test_accuracy={m['test_accuracy']:.4f} "
        f"f1={m['test_f1']:.4f} auc={m['test_roc_auc']:.4f} | {status} | MLflow run {result['mlflow_run_id']}"
    )


def _isolate_prefect_home() -> None:
    """Without a Prefect server, keep Prefect's ephemeral database under MASKCLS_HOME.

    Must run before prefect is imported: Prefect reads its settings at import time.
    """
    import os

    from maskcls.config import Settings

    if not os.environ.get("PREFECT_API_URL") and not os.environ.get("PREFECT_HOME"):
        home = Settings.from_env().home / "prefect"
        home.mkdir(parents=True, exist_ok=True)
        os.environ["PREFECT_HOME"] = str(home)
        # The ephemeral server's telemetry write races its own startup ("database is locked").
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def _explain(exc: BaseException) -> str:
    """The user-facing message of an error, whatever wrapped it."""
    from maskcls.data import DataError

    names = {"SourceError", "DataError", "TrackingError", "ConfigError", "StoreError", "DecodeError"}
    seen: BaseException | None = exc
    while seen is not None:
        if type(seen).__name__ in names or isinstance(seen, DataError):
            return str(seen)
        if type(seen).__name__ == "MlflowException":
            return _explain_mlflow(seen)
        seen = seen.__cause__ or seen.__context__
    return f"{exc.__class__.__name__}: {exc}"


def _explain_mlflow(exc: BaseException) -> str:
    """MLflow failing mid-run (the start is probed by tasks.tracking.configure): where, why, what next."""
    import os
    import re

    text = " ".join(str(exc).split())
    uri = os.environ.get("MLFLOW_TRACKING_URI") or "(local store under MASKCLS_HOME)"
    why = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text) or re.search(r"(Read timed out|timed out|Max retries exceeded)",
                                                                    text)
    problem = why.group(1).strip() if why else text[:300]
    budget = os.environ.get("MASKCLS_MLFLOW_RETRY_S") or "60"
    request = re.search(r"API request to (\S+) failed", text)
    if why:
        return (f"Lost the MLflow tracking server {uri} during the run: "
                f"{'the request ' + request.group(1) if request else 'a request'} failed ({problem}) after "
                f"retrying with backoff for up to {budget} s (MASKCLS_MLFLOW_RETRY_S). The run's finished "
                "stages are cached: run the same command again once the server is back; the next run marks "
                "this one FAILED in MLflow.")
    return f"MLflow ({uri}) refused a request: {text[:600]}"


@app.command()
def predict(
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders")],
    model: Annotated[str, typer.Option(help="MLflow model URI")] = "models:/face-mask-classifier@champion",
    batch: Annotated[int, typer.Option(help="Images per model call")] = 256,
) -> None:
    """Label images with the champion model: one line per image (path, label, probability)."""
    import pandas as pd

    from maskcls.config import Settings
    from maskcls.data import IMAGE_SUFFIXES
    from tasks import tracking

    settings = Settings.from_env()
    try:
        tracking.configure(settings)
        import mlflow

        pyfunc = mlflow.pyfunc.load_model(model)
    except Exception as exc:  # noqa: BLE001
        _fail(f"cannot load model {model} from {settings.tracking_uri}: {_explain(exc)}")
        return
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES))
        elif p.exists():
            files.append(p)
        else:
            err.print(f"{p}\terror: no such file")
    failures = 0
    for start in range(0, len(files), batch):
        chunk = files[start:start + batch]
        data: list[bytes] = []
        for f in chunk:
            try:
                data.append(f.read_bytes())
            except OSError as exc:
                data.append(b"")
                err.print(f"{f}\terror: {exc.strerror}")
        out = pyfunc.predict(pd.DataFrame({"image": data}))
        for f, label, prob in zip(chunk, out["label"], out["probability"]):
            if label is None or label != label:
                failures += 1
                print(f"{f}\terror: not a readable image", flush=True)
            else:
                print(f"{f}\t{label}\t{prob:.4f}", flush=True)
    if files and failures == len(files):
        raise typer.Exit(1)


SWEEP_HELP = (
    "Train every combination of a grid on the stack's workers, in parallel, nested under one MLflow run.\n\n"
    "Needs a running stack whose work pool has workers: `make up`, or PREFECT_API_URL and "
    "MLFLOW_TRACKING_URI of one. Each combination is a flow run of train-face-mask/sweep-member."
)


@app.command(help=SWEEP_HELP)
def sweep(
    grid: Annotated[list[str], typer.Option("--grid", help="A setting and the values to try: section.field=v1,v2 "
                                            "(repeatable; every combination is one run), e.g. "
                                            "--grid train.learning_rate=1e-3,3e-4")],
    profile: Annotated[str, typer.Option(help="default | seed | smoke")] = "default",
    source: Annotated[Optional[str], typer.Option(help="Folder, zip or http(s) URL of a zip "
                                                  "(default: the workers' MASKCLS_DATA_SOURCE)")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Override train.epochs for every run")] = None,
    max_images: Annotated[Optional[int], typer.Option(help="Override data.max_images for every run")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="A setting fixed for every run: "
                                                      "section.field=value (repeatable)")] = None,
    timeout_minutes: Annotated[float, typer.Option(help="Give up and cancel unfinished runs after this")] = 720,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON")] = False,
) -> None:
    """Train every combination of a grid on the stack's workers (help: SWEEP_HELP)."""
    import os

    from maskcls.config import ConfigError, parse_overrides

    _stack_env()
    try:
        fixed = parse_overrides(set_)
    except ConfigError as exc:
        _fail(str(exc), 2)
        return
    from flows.sweep import sweep_flow
    from maskcls.sweep import SweepError, expand_grid, parse_grid

    try:
        parsed = parse_grid(grid)
        expand_grid(parsed)
    except ConfigError as exc:
        _fail(str(exc), 2)
        return
    err.print(f"sweep on {os.environ['PREFECT_API_URL']}, MLflow {os.environ.get('MLFLOW_TRACKING_URI', '(local)')}")
    try:
        result = sweep_flow(grid=parsed, profile=profile, source=source, max_images=max_images, epochs=epochs,
                            overrides={k: json.dumps(v) if not isinstance(v, str) else v for k, v in fixed.items()},
                            timeout_minutes=timeout_minutes)
    except (SweepError, ConfigError) as exc:
        _fail(str(exc), 2 if isinstance(exc, ConfigError) else 1)
        return
    except Exception as exc:  # noqa: BLE001 - one readable paragraph, the traceback is in Prefect's log
        _fail(_explain(exc))
        return
    if json_out:
        print(json.dumps(result, indent=2, default=str))
        return
    from rich.table import Table

    table = Table("#", *(k.split(".")[-1] for k in parsed), "state", "test acc", "version", "promotion",
                  "data cached")
    for row in result["points"]:
        acc = row.get("test_accuracy")
        table.add_row(str(row["point"]), *(str(row[k]) for k in parsed), row["state"],
                      "" if acc is None else f"{acc:.4f}", row.get("model_version") or "",
                      row.get("promotion") or "", f"{row['data_stages_cached']} stages")
    Console().print(table)
    champion = result["champion"]
    Console().print(
        f"[bold green]done[/] parent MLflow run {result['mlflow_run_id']} | champion: "
        + ("none" if champion is None else
           f"version {champion['version']} ({'from this sweep' if champion['from_sweep'] else 'unchanged'})")
    )


def _stack_env() -> None:
    """Point Prefect and MLflow at a running stack: the environment's, else the one `make up` started here.

    Must run before prefect is imported: Prefect reads its settings at import time.
    """
    import os

    from flows import stack

    if not os.environ.get("PREFECT_API_URL"):
        config = stack.StackConfig.from_env()
        services = stack.load_services(config.paths)
        prefect, mlflow = services.get(stack.PREFECT_SERVER), services.get(stack.MLFLOW_SERVER)
        if prefect is None or not prefect.healthy() or not prefect.url:
            _fail("no Prefect server: a sweep runs its points on the workers of a running stack. Start it with "
                  "`make up` (then run this from the same folder, or with the same MASKCLS_HOME), or set "
                  "PREFECT_API_URL and MLFLOW_TRACKING_URI to a stack whose work pool has workers.", 2)
            return
        os.environ["PREFECT_API_URL"] = f"{prefect.url}/api"
        if not os.environ.get("MLFLOW_TRACKING_URI") and mlflow is not None and mlflow.healthy() and mlflow.url:
            os.environ["MLFLOW_TRACKING_URI"] = mlflow.url
    api_url = os.environ["PREFECT_API_URL"].rstrip("/")
    if not stack.http_ok(f"{api_url}/health", timeout=10):
        _fail(f"the Prefect server at PREFECT_API_URL={api_url} does not answer: start the stack (`make up`) "
              "or fix PREFECT_API_URL", 2)
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        _fail("MLFLOW_TRACKING_URI is not set: set it to the MLflow server the workers log to, so the "
              "sweep's runs nest under one parent run", 2)


@cache_app.command("prune")
def cache_prune(dry_run: Annotated[bool, typer.Option("--dry-run")] = False) -> None:
    """Remove stored models that no registered model version uses (data arrays stay)."""
    from maskcls.config import REGISTERED_MODEL_NAME, Settings
    from maskcls.store import sha256_file
    from tasks import tracking

    settings = Settings.from_env()
    client = tracking.configure(settings)
    import tempfile

    keep: set[str] = set()
    for mv in client.search_model_versions(f"name='{REGISTERED_MODEL_NAME}'"):
        with tempfile.TemporaryDirectory() as tmp:
            try:
                local = client.download_artifacts(mv.run_id, "model/artifacts/model.keras", tmp)
                keep.add(sha256_file(local))
            except Exception:  # noqa: BLE001 - a version without artifacts keeps nothing
                continue
    models = settings.store_dir / "models"
    removed = [p for p in models.glob("*.keras") if p.stem not in keep] if models.exists() else []
    for p in removed:
        print(f"{'would remove' if dry_run else 'removed'} {p}")
        if not dry_run:
            p.unlink()
    print(f"{len(removed)} model files {'to remove' if dry_run else 'removed'}, {len(keep)} in use kept")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":
    sys.exit(app())
