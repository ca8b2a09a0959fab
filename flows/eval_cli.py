"""`maskcls evaluate` (score a model version on your own labelled folders) and `maskcls champion
set|show` (move the champion alias by hand, or see where it points).

Mounted on the main app by ``app.command("evaluate")(eval_cli.evaluate)`` and
``app.add_typer(eval_cli.champion_app, name="champion")``. Errors are ``MaskclsError``s,
reported by the main app's group.
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from maskcls.errors import ConfigError

# maskcls.config's names, spelled here so that `maskcls --help` does not import pydantic-settings
# (tests/unit/flows/test_eval_cli.py checks they are the same).
REGISTERED_MODEL_NAME = "face-mask-classifier"
CHAMPION_ALIAS = "champion"
DEFAULT_MODEL = f"models:/{REGISTERED_MODEL_NAME}@{CHAMPION_ALIAS}"
#: `maskcls evaluate`'s exit code when it scored the folder but skipped unreadable images.
EXIT_SKIPPED = 3
err = Console(stderr=True)
out = Console()

champion_app = typer.Typer(no_args_is_help=True, help="See or move the registered model's `champion` alias.")


def _route(ctx: typer.Context) -> Any:
    """The main app's settings, with every log record routed to the log file."""
    from flows.cli import _route_logging

    run = ctx.obj
    _route_logging(run)
    return run.settings


def _version_tags(client: Any, ref: Any) -> dict[str, str]:
    """The registered name/version (and alias) an evaluated URI resolves to, as run tags."""
    from tasks import tracking

    if ref.name is None:
        return {}
    version = (tracking.model_version(client, ref.name, ref.version) if ref.version
               else tracking.alias_version(client, ref.name, ref.alias))
    if version is None:
        raise ConfigError(f"{ref.name} has no alias {ref.alias!r} (`maskcls champion show --model {ref.name}`)")
    return {"model_name": ref.name, "model_version": str(version.version), "model_run_id": version.run_id or "",
            **({"model_alias": ref.alias} if ref.alias else {})}


def evaluate(
    ctx: typer.Context,
    folder: Annotated[Path, typer.Argument(help="Labelled images: one sub-folder per class of the model "
                                           "(FOLDER/<class>/*.jpg)")],
    model: Annotated[str, typer.Option(help="MLflow model URI: models:/NAME/VERSION, models:/NAME@ALIAS or "
                                       "runs:/RUN_ID/model")] = DEFAULT_MODEL,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Folder for the figures and files "
                                                    "(confusion matrix, report, misclassified, predictions)")] = None,
    log: Annotated[bool, typer.Option("--log", help="Log the metrics and files to MLflow as a run of experiment "
                                      "face-mask-evaluations, tagged with the model version")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON")] = False,
) -> None:
    """Score a model version on your own labelled class folders: the same metrics and figures as a run.

    Exit 0, or 3 when some images could not be read (each is named on stderr and skipped).
    """
    from maskcls.files import folder_fingerprint
    from maskcls.folder_eval import labelled_images, parse_model_uri, score_folder
    from maskcls.names import EVALUATION_EXPERIMENT
    from tasks import tracking

    ref = parse_model_uri(model)
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder: give a folder with one sub-folder of images per class")
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file: give a folder for the evaluation's figures")
    settings = _route(ctx)
    classifier = tracking.load_classifier(settings, model)
    images = labelled_images(folder, classifier.classes)
    for name in images.missing:
        err.print(f"warning: {folder} has no folder {name}/: recall of class {name} is not measured", highlight=False)
    if images.loose:
        err.print(f"warning: {len(images.loose)} images directly in {folder} are in no class folder: not scored",
                  highlight=False)
    with contextlib.ExitStack() as stack:
        target = out_dir if out_dir is not None else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        score = score_folder(classifier, images, target)
        for rel, why in score.unreadable:  # one plain line each, like `maskcls predict`'s
            print(f"{folder / rel}\terror: {why} (skipped)", file=sys.stderr, flush=True)
        run_info: dict[str, str] = {}
        if log:
            client = tracking.configure(settings)
            tags = {"evaluation": "true", "model_uri": model, **_version_tags(client, ref)}
            run_id = tracking.create_run(client, settings, f"evaluate-{folder.name}", tags,
                                         experiment=EVALUATION_EXPERIMENT)
            ok = False
            try:
                tracking.log_params(client, run_id, {
                    "data_dir": str(folder.resolve()), "data_fingerprint": folder_fingerprint(folder),
                    "classes": ",".join(images.classes), "n_images": len(images.files) - len(score.unreadable),
                    "n_unreadable": len(score.unreadable)})
                # The same metric names as a training run's test side, so MLflow compares them.
                tracking.log_metrics(client, run_id, {f"test_{k}": v for k, v in score.metrics.items()})
                tracking.log_folder(client, run_id, target)
                if score.unreadable:
                    tracking.log_json(client, run_id, [{"path": p, "error": e} for p, e in score.unreadable],
                                      "unreadable.json")
                ok = True
            finally:
                tracking.end_run(client, run_id, ok)
            exp_id = tracking.experiment_id(client, settings, EVALUATION_EXPERIMENT)
            run_info = {"mlflow_run_id": run_id, "url": tracking.run_url(settings, exp_id, run_id)}
    result = {"model": model, "folder": str(folder), "metrics": score.metrics, "counts": score.counts,
              "unreadable": [p for p, _ in score.unreadable], "out": str(out_dir) if out_dir else None, **run_info}
    if json_out:
        print(json.dumps(result, indent=2))
    else:
        _print_scores(result)
    if score.unreadable:
        raise typer.Exit(EXIT_SKIPPED)


def _print_scores(result: dict[str, Any]) -> None:
    counts = ", ".join(f"{c} {n}" for c, n in result["counts"].items())
    out.print(f"{result['model']} on {result['folder']}: {sum(result['counts'].values())} images ({counts}); "
              f"{len(result['unreadable'])} unreadable", highlight=False, soft_wrap=True)
    table = Table("metric", "value")
    for key, value in result["metrics"].items():
        table.add_row(key, "n/a" if value != value else f"{value:.4f}")
    out.print(table)
    if result["out"]:
        out.print(f"figures and files in {result['out']}", highlight=False, soft_wrap=True)
    if result.get("mlflow_run_id"):
        out.print(f"logged as MLflow run {result['mlflow_run_id']}: {result['url']}", highlight=False,
                  soft_wrap=True)
    elif not result["out"]:
        out.print("(give --out DIR to keep the figures, --log to log them to MLflow)", highlight=False)


@champion_app.command("set")
def champion_set(
    ctx: typer.Context,
    version: Annotated[str, typer.Argument(help="The version to make champion, e.g. 3")],
    reason: Annotated[str, typer.Option(help="Why (kept as the version's promotion_reason tag)")],
    model: Annotated[str, typer.Option("--model", help="Registered model name")] = REGISTERED_MODEL_NAME,
) -> None:
    """Move `champion` to VERSION by hand (a roll-back), tagged with why, who and when; the scanner follows."""
    from tasks.champion import check_request, set_champion

    check_request(version, reason)  # before the imports and requests below
    settings = _route(ctx)
    done = set_champion(settings, model, version, reason)
    out.print(f"[bold green]done[/] {model}@{CHAMPION_ALIAS}: version {done['previous']} -> {done['version']} "
              f"(by {done['by']}, {done['at']}) | MLflow run {done['run_id']}", highlight=False)
    if done["scanner_version"]:
        out.print(f"scanner: new version {done['scanner_version']} bundles version {done['version']}", highlight=False)
    if done["scanner_error"]:
        err.print(f"warning: the scanner did not follow ({done['scanner_error']}); the next promotion retries",
                  highlight=False, soft_wrap=True)
        raise typer.Exit(1)


@champion_app.command("show")
def champion_show(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", help="Registered model name")] = REGISTERED_MODEL_NAME,
    json_out: Annotated[bool, typer.Option("--json", help="Print it as JSON")] = False,
) -> None:
    """The current champion: version, test metrics, since when and why."""
    from tasks.champion import show_champion

    info = show_champion(_route(ctx), model)
    if json_out:
        print(json.dumps(info, indent=2))
        return
    if info is None:
        out.print(f"{model} has no champion yet (a training run that registers a version makes one)")
        raise typer.Exit(1)
    table = Table(show_header=False, title=f"{model}@{CHAMPION_ALIAS}")
    for key in ("version", "champion_since", "promotion", "reason", "by", "profile", "run_id",
                "dataset_fingerprint"):
        if info.get(key):
            table.add_row(key, str(info[key]))
    for key, value in info["metrics"].items():
        table.add_row(key, f"{value:.4f}")
    scanner = info.get("scanner")
    if scanner:
        table.add_row("scanner", f"{scanner['name']} v{scanner['version'] or '-'} (bundles version "
                      f"{scanner['bundles_version'] or '-'})")
    out.print(table)
