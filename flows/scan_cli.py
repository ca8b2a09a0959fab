"""`maskcls scan`: find every face in photos and video, label each with the champion, count them.

Mounted on the main app by ``app.command("scan")(scan_cli.scan)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

DEFAULT_MODEL = "models:/face-mask-scanner@champion"
err = Console(stderr=True)


def scan(
    paths: Annotated[Optional[list[Path]], typer.Argument(help="Photos, videos or folders of them")] = None,
    model: Annotated[str, typer.Option(help="MLflow model URI of the scanning model (face detector + "
                                       "classifier)")] = DEFAULT_MODEL,
    out: Annotated[Path, typer.Option(help="Folder for scan.csv, summary.json and annotated copies")] = Path("scans"),
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON")] = False,
    blur: Annotated[bool, typer.Option("--blur", help="Blur every face in the annotated copies")] = False,
    no_images: Annotated[bool, typer.Option("--no-images", help="Write no annotated copies")] = False,
    every: Annotated[float, typer.Option(help="Video: scan one frame every this many seconds")] = 1.0,
    whole_image: Annotated[bool, typer.Option("--whole-image", help="With no face found, classify the whole "
                                              "image (for close crops)")] = False,
    evaluate: Annotated[Optional[Path], typer.Option(help="Score against an annotated scene folder "
                                                     "(images/, annotations/, splits.csv) instead: its "
                                                     "report photos")] = None,
) -> None:
    """Find every face, label it with the classifier, count how many wear masks (exit 1 if an input failed)."""
    from pydantic import ValidationError

    from maskcls.config import Settings
    from maskcls.scan import ScanConfig, write_csv, write_summary
    from tasks import tracking

    if not paths and evaluate is None:
        err.print("[bold red]error:[/] give photos, videos or folders to scan (or --evaluate DIR)")
        raise typer.Exit(2)
    try:
        config = ScanConfig(every_s=every, blur=blur, whole_image=whole_image)
    except ValidationError as exc:
        err.print(f"[bold red]error:[/] {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}")
        raise typer.Exit(2) from None
    # The loaded scanning model's own detector and classifier scan, with this command's settings
    # (--whole-image, --every, --blur); a TrackingError names the model and the server.
    scanning_model = tracking.load_scanner(Settings.from_env(), model)
    scanner = scanning_model.scanner(config)
    classes = list(scanning_model.classifier.classes)
    if evaluate is not None:
        from maskcls.scenes import evaluate as evaluate_scenes

        figures = evaluate_scenes(scanner, evaluate, "report", classes)
        print(json.dumps(figures, indent=2))
        raise typer.Exit(1 if figures["failed"] else 0)
    out.mkdir(parents=True, exist_ok=True)
    with _progress() as progress:
        task = progress.add_task("scanning", total=None)
        result = scanner.scan(paths or [], None if no_images else out / "images",
                              lambda done, total: progress.update(task, completed=done, total=total))
    summary = result.summary(classes)
    write_csv(out / "scan.csv", result)
    write_summary(out / "summary.json", summary)
    if json_out:
        print(json.dumps(summary, indent=2))
    else:
        _print_table(summary, out, no_images)
    raise typer.Exit(1 if result.failed else 0)


def _progress() -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    # On stderr, and only once a scan takes a while, so short runs and --json stay clean.
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=err, transient=True)


def _print_table(summary: dict[str, Any], out: Path, no_images: bool) -> None:
    console = Console()
    table = Table("", "count")
    table.add_row("images", str(summary["images"]))
    table.add_row("faces", str(summary["faces"]))
    for key, value in summary.items():
        if key.startswith("count_"):
            table.add_row(key[len("count_"):], str(value))
    share = summary["masked_share"]
    table.add_row("masked share", "-" if share is None else
                  f"{share:.1%} (95% CI {summary['masked_share_low']:.1%}-{summary['masked_share_high']:.1%})")
    table.add_row("images without faces", str(len(summary["images_without_faces"])))
    table.add_row("failed", str(len(summary["failed"])))
    console.print(table)
    if summary["whole_image_classified"]:
        console.print(f"{len(summary['whole_image_classified'])} image(s) had no face found and were classified "
                      "as a whole (--whole-image)")
    for f in summary["failed"]:
        err.print(f"[red]failed[/] {f['input']}: {f['reason']}", soft_wrap=True)
    console.print(f"wrote {out / 'scan.csv'}, {out / 'summary.json'}" +
                  ("" if no_images else f" and annotated copies under {out / 'images'}"))
