"""`maskcls` command line: train, predict, evaluate, champion, sweep, scan, cache prune, stack up|down|status.

Errors: a ``MaskclsError`` prints its message alone (exit 2 for a ConfigError, else 1);
the traceback and Prefect's failure reports go to ``$MASKCLS_HOME/logs/maskcls.log``, or
to the console with ``maskcls --debug ...``.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.console import Console
from typer.core import TyperGroup
from typer.exceptions import TyperException

# Only light modules at the top, for a quick `maskcls --help`: the settings (pydantic-settings),
# Prefect, MLflow, TensorFlow and OpenCV load inside the commands that use them.
from flows import eval_cli, scan_cli
from maskcls.errors import ConfigError, MaskclsError, OrchestrationError
from stack import cli as stack_cli

if TYPE_CHECKING:
    from maskcls.config import Settings

err = Console(stderr=True)
#: Writes the tracebacks of reported errors to the log file only (see _route_logging).
log = logging.getLogger("maskcls.cli")


@dataclass
class _Run:
    """What the global options and the environment give every command (``ctx.obj``)."""

    settings: Settings
    debug: bool
    log_file: Path | None = None  # set once records are routed to it


class _ReportingGroup(TyperGroup):
    """Runs a command; an error becomes one paragraph on stderr and an exit code."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, TyperException):  # exit codes and usage errors: typer reports them
            raise
        except Exception as exc:  # noqa: BLE001 - reported below, never swallowed
            run = ctx.obj if isinstance(ctx.obj, _Run) else None
            _report(exc, debug=run.debug if run else bool(ctx.params.get("debug")),
                    log_file=run.log_file if run else None)
            raise typer.Exit(2 if isinstance(exc, ConfigError) else 1) from None


def _report(exc: Exception, debug: bool, log_file: Path | None) -> None:
    """``error: <message>``, after the traceback with --debug, else with where the full log is."""
    if log_file is not None:
        log.error("%s", exc, exc_info=exc)
    if debug:
        err.print("".join(traceback.format_exception(exc)), markup=False, highlight=False, soft_wrap=True,
                  end="")
    if isinstance(exc, MaskclsError):
        text = exc.message
    else:  # a bug, or a failure nothing translated yet: say what it is, without pretending to explain it
        text = f"unexpected {exc.__class__.__name__}: {' '.join(str(exc).split())[:600]}"
    err.print(f"[bold red]error:[/] {text}", soft_wrap=True, highlight=False)
    if log_file is not None and not debug:
        err.print(f"The full log is in {log_file} (`maskcls --debug ...` shows it here).",
                  soft_wrap=True, highlight=False)


app = typer.Typer(cls=_ReportingGroup, add_completion=False, no_args_is_help=True,
                  pretty_exceptions_enable=False, help="Train, track and use the face-mask classifier.")
cache_app = typer.Typer(no_args_is_help=True, help="Manage the content-addressed store under MASKCLS_HOME.")
app.add_typer(cache_app, name="cache")


@app.callback()
def _global_options(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Print tracebacks and Prefect's failure reports on "
                                        "the console (they always go to $MASKCLS_HOME/logs/maskcls.log)")] = False,
) -> None:
    """Read the environment once, for every command (a bad MASKCLS_* value stops here).

    Ctrl-C gets a handler of ours that raises KeyboardInterrupt as Python's own does: while
    Python's default is installed, ``asyncio.run`` in the main thread (Prefect runs some calls
    that way) swaps in one that only cancels its task, and a task that absorbs the cancellation
    loses the Ctrl-C: a train or a sweep then went on to the end (seen under load in
    tests/faults/test_signals.py and tests/integration/test_sweep.py).
    """
    from maskcls.config import Settings

    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _interrupt)

    ctx.obj = _Run(settings=Settings.from_env(), debug=debug)


class _NoFailureReports(logging.Filter):
    """Keeps the console to progress: a failure is reported once, by the CLI's own paragraph.

    Dropped (they stay in the log file): records carrying a traceback, errors logged by
    Prefect's flow and task engines, and the flow engine's closing "Finished in state
    Failed/Crashed" line, which repeats the error's text.
    """

    _ENGINES = ("prefect.flow_runs", "prefect.task_runs")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info:
            return False
        if not record.name.startswith(self._ENGINES):
            return True
        if record.levelno >= logging.ERROR:
            return False
        return not record.getMessage().startswith(("Finished in state Failed", "Finished in state Crashed"))


def _route_logging(run: _Run) -> None:
    """Every log record of this process goes to the log file; the console keeps progress only.

    Call it after Prefect is imported, when the command uses Prefect: Prefect installs its
    console handler on the root logger at import, and leaves the root logger alone if it
    already has a handler like ours.
    """
    run.log_file = run.settings.logs_dir / "maskcls.log"
    run.log_file.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    consoles = list(root.handlers)
    to_file = logging.FileHandler(run.log_file, encoding="utf-8")
    to_file.setFormatter(logging.Formatter("%(asctime)s | %(levelname)-7s | %(process)d | %(name)s - %(message)s"))
    root.addHandler(to_file)
    log.addHandler(to_file)
    log.propagate = False  # a reported error's traceback: the console shows it only through --debug
    if not run.debug:
        for handler in consoles:
            handler.addFilter(_NoFailureReports())


def _as_flow_overrides(overrides: dict[str, Any]) -> dict[str, str]:
    """Overrides as the flows' string parameters (the form the Prefect UI's run form sends)."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in overrides.items()}


@app.command()
def train(
    ctx: typer.Context,
    profile: Annotated[str, typer.Option(help="default | seed | three-class | smoke")] = "default",
    source: Annotated[Optional[list[str]], typer.Option(
        help="A part of the data (repeatable): folder, zip, http(s) URL of a zip, or voc:FOLDER[?part=tune] "
        "(PASCAL VOC boxes cut into faces); PATH?group=person keeps a person's files together "
        "(default: the profile's own list, else MASKCLS_DATA_SOURCE, else the pinned archive)")] = None,
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
    from maskcls.config import load_config, parse_overrides

    run: _Run = ctx.obj
    overrides = parse_overrides(set_)
    load_config(profile, overrides)  # fail fast on a bad profile or setting
    clock = {"entered": time.perf_counter()}
    with _sigterm_exits():
        api_ready = _prefect_api(run.settings)
        from flows.train import train_flow  # Prefect, MLflow: seconds of imports, while the server starts

        clock["imported"] = time.perf_counter()
        _route_logging(run)
        api_ready()
        clock["server_ready"] = time.perf_counter()
        result = train_flow(profile=profile, source=source, epochs=epochs, learning_rate=learning_rate,
                            batch_size=batch_size, max_images=max_images, refresh=refresh,
                            overrides=_as_flow_overrides(overrides))
        clock["flow_done"] = time.perf_counter()
    if json_out:
        result["timings"] = _timings(clock)
        print(json.dumps(result, indent=2, default=str))
        return
    m = result["metrics"]
    status = "all stages cached, nothing registered" if result["cache_hit"] else (
        f"{result['registered_model']} version {result['model_version']}: {result['promotion']}")
    Console().print(
        f"[bold green]done[/] profile={profile} test_accuracy={m['test_accuracy']:.4f} "
        f"f1={m['test_f1']:.4f} auc={m['test_roc_auc']:.4f} | {status} | MLflow run {result['mlflow_run_id']}"
    )


def _timings(clock: dict[str, float]) -> dict[str, float]:
    """Where a train command's seconds went: interpreter start and the CLI's own imports (up to
    the command), Prefect's and MLflow's imports, the wait for the Prefect server beyond them (a
    temporary one starts while they import), the flow; not the exit (the temporary server's stop)."""
    import psutil

    started = psutil.Process().create_time()  # wall clock; perf_counter's origin is arbitrary
    now_wall, now = time.time(), time.perf_counter()
    return {
        "startup_s": round(clock["entered"] - (now - (now_wall - started)), 3),
        "imports_s": round(clock["imported"] - clock["entered"], 3),
        "server_wait_s": round(clock["server_ready"] - clock["imported"], 3),
        "flow_s": round(clock["flow_done"] - clock["server_ready"], 3),
    }


def _isolate_prefect_home(settings: Settings) -> None:
    """Without a Prefect server, keep Prefect's ephemeral database under MASKCLS_HOME.

    Must run before prefect is imported: Prefect reads its settings at import time.
    """
    if not os.environ.get("PREFECT_API_URL") and not os.environ.get("PREFECT_HOME"):
        home = settings.home / "prefect"
        home.mkdir(parents=True, exist_ok=True)
        os.environ["PREFECT_HOME"] = str(home)
        # The ephemeral server's telemetry write races its own startup ("database is locked").
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@contextlib.contextmanager
def _sigterm_exits() -> Iterator[None]:
    """SIGTERM raises SystemExit(143) in the main thread, so every ``finally`` runs (the MLflow
    run is ended, the temporary Prefect server stopped) instead of the process vanishing.

    A second SIGTERM during that cleanup kills at once (the default action).
    """
    def stop(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


#: How long the temporary server may take to answer: its start competes with the CLI's imports.
SERVER_START_TIMEOUT_S = 120.0


def _prefect_api(settings: Settings) -> Callable[[], None]:
    """Point Prefect at PREFECT_API_URL's server, else start a temporary one owned by this process.

    Returns ``ready()``, which waits until the API answers. The temporary server replaces
    Prefect's own ephemeral one for two reasons: it starts before Prefect, MLflow and the
    flow are imported, so their imports overlap its start-up (Prefect's starts only when
    the flow does); and it cannot outlive this process. It is stopped with its process
    tree at exit (SIGTERM included, with ``_sigterm_exits``), after Prefect's own exit
    hooks have sent their last logs and events to it, and the kernel sends it SIGTERM if
    this process dies without cleaning up (SIGKILL). Same server as Prefect's: its uvicorn
    app, no UI, ephemeral services, database under MASKCLS_HOME/prefect; its output goes
    to MASKCLS_HOME/logs/prefect-server.log.
    """
    if os.environ.get("PREFECT_API_URL"):
        return lambda: None
    _isolate_prefect_home(settings)
    log_path = settings.logs_dir / "prefect-server.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    server = _TemporaryServer(log_path)
    # atexit hooks run after Prefect drains its log and event workers (threading's exit hooks).
    atexit.register(server.stop)
    os.environ["PREFECT_API_URL"] = server.api_url  # before prefect is imported: read at import
    os.environ.setdefault("PREFECT_UI_URL", "")  # it serves no UI: no "View at" links to nothing
    return server.wait_ready


class _TemporaryServer:
    """A Prefect API server (uvicorn) in a child process that dies with this one."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.port = _free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        err.print(f"Starting a temporary Prefect server on {self.api_url} (set PREFECT_API_URL to use another)",
                  highlight=False)
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app",
                 "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "error", "--lifespan", "on"],
                # What Prefect sets for its own ephemeral server: no UI, the ephemeral services only.
                env={**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
                     "PREFECT__SERVER_FINAL": "1"},
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent(os.getpid()),
            )

    def wait_ready(self) -> None:
        """Return once ``/api/health`` answers; raise OrchestrationError if the server exits or hangs."""
        from stack.health import http_ok

        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not http_ok(f"{self.api_url}/health", timeout=2):
            code = self.process.poll()
            if code is not None or time.monotonic() > deadline:
                what = f"exited with code {code}" if code is not None else f"did not answer in {SERVER_START_TIMEOUT_S:.0f} s"
                raise OrchestrationError(
                    f"the temporary Prefect server on {self.api_url} {what}; its log is {self.log_path}. "
                    "Set PREFECT_API_URL to a running Prefect server (`make up` starts one) to do without it.")
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM the server's process tree, SIGKILL what is left after 10 s, and reap it."""
        from stack.processes import process_tree, terminate

        terminate(process_tree([self.process.pid]) | {self.process.pid}, timeout=10)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent(parent: int) -> Any:
    """A ``preexec_fn``: the child gets SIGTERM when this thread's process dies (Linux prctl)."""
    if not sys.platform.startswith("linux"):
        return None

    def arm() -> None:
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the request took effect
            os._exit(1)

    return arm


@app.command()
def predict(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders")],
    model: Annotated[str, typer.Option(help="MLflow model URI")] = "models:/face-mask-classifier@champion",
    batch: Annotated[int, typer.Option(help="Images per model call")] = 256,
) -> None:
    """Label images with the champion model: one line per image (path, label, probability)."""
    import pandas as pd

    from maskcls.files import image_files, read_regular
    from tasks import tracking

    run: _Run = ctx.obj
    _route_logging(run)
    pyfunc = tracking.load_model(run.settings, model)
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files.extend(image_files(p))
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
                data.append(read_regular(f))
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
    ctx: typer.Context,
    grid: Annotated[Optional[list[str]], typer.Option("--grid", help="A setting and the values to try: "
                                                      "section.field=v1,v2 (repeatable; every combination is "
                                                      "one run), e.g. --grid train.learning_rate=1e-3,3e-4")] = None,
    profile: Annotated[str, typer.Option(help="default | seed | smoke")] = "default",
    source: Annotated[Optional[list[str]], typer.Option(
        help="A part of the data (repeatable), as for train: folder, zip, http(s) URL of a zip, voc:FOLDER "
        "(default: the profile's own list, else the workers' MASKCLS_DATA_SOURCE)")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Override train.epochs for every run")] = None,
    max_images: Annotated[Optional[int], typer.Option(help="Override data.max_images for every run")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="A setting fixed for every run: "
                                                      "section.field=value (repeatable)")] = None,
    timeout_minutes: Annotated[float, typer.Option(help="Give up and cancel unfinished runs after this")] = 720,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON")] = False,
    export: Annotated[Optional[Path], typer.Option("--export", help="Write the candidates (params, metrics, run "
                                                   "ids, commit, dataset fingerprint, rank) to this JSON file, "
                                                   "e.g. docs/experiments/NAME.json")] = None,
    from_run: Annotated[Optional[str], typer.Option("--from-run", help="Train nothing: export the sweep whose "
                                                    "parent MLflow run is this (with --export)")] = None,
) -> None:
    """Train every combination of a grid on the stack's workers (help: SWEEP_HELP)."""
    from maskcls.config import parse_overrides

    run: _Run = ctx.obj
    if export is not None and export.is_dir():
        raise ConfigError(f"--export {export} is a folder: give the JSON file to write, e.g. {export}/NAME.json")
    if from_run is not None:
        if export is None or grid:
            raise ConfigError("--from-run exports an existing sweep: give it with --export FILE and without --grid")
        from tasks.sweep import export_sweep

        _route_logging(run)
        document = export_sweep(run.settings, from_run, export)
        _print_export(document, export)
        return
    if not grid:
        raise ConfigError("give at least one --grid section.field=v1,v2 (or --from-run RUN_ID --export FILE to "
                          "export an existing sweep)")
    _stack_env()
    fixed = parse_overrides(set_)
    from flows.sweep import sweep_flow
    from maskcls.sweep import expand_grid, parse_grid

    _route_logging(run)
    parsed = parse_grid(grid)
    expand_grid(parsed)
    err.print(f"sweep on {os.environ['PREFECT_API_URL']}, MLflow {os.environ.get('MLFLOW_TRACKING_URI', '(local)')}")
    result = sweep_flow(grid=parsed, profile=profile, source=source, max_images=max_images, epochs=epochs,
                        overrides=_as_flow_overrides(fixed), timeout_minutes=timeout_minutes)
    document = None
    if export is not None:
        from maskcls.config import Settings
        from tasks.sweep import export_sweep

        document = export_sweep(Settings.from_env(), result["mlflow_run_id"], export)
    if json_out:
        print(json.dumps(result, indent=2, default=str))
        return
    from rich.table import Table

    from maskcls.sweep import RANKING_RULE

    origin = any(row.get("origin_recall_min") is not None for row in result["points"])
    table = Table("#", *(k.split(".")[-1] for k in parsed), "state", "rank", "val loss",
                  *(["worst origin recall"] if origin else []), "test acc", "version", "promotion", "data cached",
                  caption=f"ranked by {RANKING_RULE}")
    for row in result["points"]:
        table.add_row(str(row["point"]), *(str(row[k]) for k in parsed), row["state"], _cell(row.get("rank")),
                      _cell(row.get("val_loss")), *([_cell(row.get("origin_recall_min"))] if origin else []),
                      _cell(row.get("test_accuracy")), row.get("model_version") or "",
                      row.get("promotion") or "", f"{row['data_stages_cached']} stages")
    Console().print(table)
    if document is not None:
        _print_export(document, export)
    champion = result["champion"]
    Console().print(
        f"[bold green]done[/] parent MLflow run {result['mlflow_run_id']} | champion: "
        + ("none" if champion is None else
           f"version {champion['version']} ({'from this sweep' if champion['from_sweep'] else 'unchanged'})")
    )


def _cell(value: Any) -> str:
    """A table cell: a float to 4 decimals, nothing for None."""
    return "" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def _print_export(document: dict[str, Any], path: Path) -> None:
    best = document["best_run_id"]
    Console().print(f"exported {len(document['candidates'])} candidates of sweep {document['parent_run_id']} to "
                    f"{path} | best (lowest validation loss): {best or 'none had a validation loss'}",
                    highlight=False)


def _stack_env() -> None:
    """Point Prefect and MLflow at a running stack: the environment's, else the one `make up` started here.

    Must run before prefect is imported: Prefect reads its settings at import time.
    """
    import stack
    from maskcls.config import Settings

    if not os.environ.get("PREFECT_API_URL"):
        config = stack.StackConfig.from_settings(Settings.from_env())
        services = stack.load_services(config.paths)
        prefect, mlflow = services.get(stack.PREFECT_SERVER), services.get(stack.MLFLOW_SERVER)
        if prefect is None or not prefect.healthy() or not prefect.url:
            raise ConfigError(
                "no Prefect server: a sweep runs its points on the workers of a running stack. Start it with "
                "`make up` (then run this from the same folder, or with the same MASKCLS_HOME), or set "
                "PREFECT_API_URL and MLFLOW_TRACKING_URI to a stack whose work pool has workers.")
        os.environ["PREFECT_API_URL"] = f"{prefect.url}/api"
        if not os.environ.get("MLFLOW_TRACKING_URI") and mlflow is not None and mlflow.healthy() and mlflow.url:
            os.environ["MLFLOW_TRACKING_URI"] = mlflow.url
    api_url = os.environ["PREFECT_API_URL"].rstrip("/")
    if not stack.http_ok(f"{api_url}/health", timeout=10):
        raise ConfigError(f"the Prefect server at PREFECT_API_URL={api_url} does not answer: start the stack "
                          "(`make up`) or fix PREFECT_API_URL")
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        raise ConfigError("MLFLOW_TRACKING_URI is not set: set it to the MLflow server the workers log to, so "
                          "the sweep's runs nest under one parent run")


@cache_app.command("prune")
def cache_prune(ctx: typer.Context, dry_run: Annotated[bool, typer.Option("--dry-run")] = False) -> None:
    """Remove stored models that no registered model version uses (data arrays stay)."""
    from tasks import tracking

    run: _Run = ctx.obj
    _route_logging(run)
    keep = tracking.registered_model_files(run.settings)
    models = run.settings.store_dir / "models"
    removed = [p for p in models.glob("*.keras") if p.stem not in keep] if models.exists() else []
    for p in removed:
        print(f"{'would remove' if dry_run else 'removed'} {p}")
        if not dry_run:
            p.unlink()
    print(f"{len(removed)} model files {'to remove' if dry_run else 'removed'}, {len(keep)} in use kept")


app.command("scan")(scan_cli.scan)
app.command("evaluate")(eval_cli.evaluate)
app.add_typer(eval_cli.champion_app, name="champion")
app.add_typer(stack_cli.app, name="stack")


if __name__ == "__main__":
    app()
