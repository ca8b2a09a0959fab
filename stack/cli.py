"""Command line of the local stack: `python -m stack up|down|status`, also mounted as `maskcls stack`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from maskcls.errors import ConfigError

if TYPE_CHECKING:  # the supervisor (httpx, psutil) loads when a command runs, not for `maskcls --help`
    from stack.supervisor import StackConfig

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="docker-compose.yml's layout without Docker: Prefect and MLflow servers, the work pool's "
    "workers and the deployments, on 127.0.0.1.",
)

#: Exit status of `status` when something recorded is not running or a deployment is missing.
NOT_OK = 3


def _fail(exc: Exception, hint: str | None = None) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    if hint:
        typer.echo(hint, err=True)
    return typer.Exit(1)


def _config() -> StackConfig:
    """The stack's settings, read from the environment here at the entry point."""
    from maskcls.config import Settings
    from stack.supervisor import StackConfig

    try:
        return StackConfig.from_settings(Settings.from_env())
    except ConfigError as exc:
        raise _fail(exc) from None


@app.command()
def up() -> None:
    """Start what is not running yet, wait for every health check, register the deployments."""
    from stack import supervisor

    try:
        supervisor.up(_config())
    except (RuntimeError, TimeoutError) as exc:
        raise _fail(exc, "What did start keeps running; `make down` stops it.") from None


@app.command()
def down() -> None:
    """Stop every process the stack started, flow runs of its workers included."""
    from stack import supervisor

    try:
        supervisor.down(_config())
    except RuntimeError as exc:
        raise _fail(exc) from None


@app.command()
def status() -> None:
    """List the recorded services and every deployment; exit 3 unless all run and all are registered."""
    from stack import supervisor

    if not supervisor.status(_config()).ok:
        raise typer.Exit(NOT_OK)
