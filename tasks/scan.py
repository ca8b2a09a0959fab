"""The scan flow's tasks: list the images a scanner version has not seen, scan them in batches
with the registered scanner, summarise them, log the run.

An image is scanned once per scanner version: each image's result is kept under
``$MASKCLS_HOME/scan-cache/<key>.json``, the key being the image's sha256 + the scanner's
name and registered version + the scan settings that change its answer. A run over a
folder it has seen lists nothing new, never loads the model, and says so; a new scanner
champion is a new key, so everything is scanned again.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import get_run_context
from pydantic import BaseModel

from maskcls.config import CHAMPION_ALIAS, Settings
from maskcls.errors import ConfigError, TrackingError
from maskcls.files import FileEntry, is_image_name, read_regular, sha256_file, walk
from maskcls.names import SCAN_EXPERIMENT, SCANNER_MODELS
from maskcls.preprocess import DecodeError
from maskcls.scan import (
    FaceResult,
    Failure,
    ImageResult,
    ScanResult,
    annotated_name,
    read_image,
    write_annotated,
    write_csv,
    write_summary,
)
from maskcls.store import atomic_write_bytes
from mlflow import MlflowClient
from tasks import tracking

CACHE_DIR = "scan-cache"
#: Runs shown in masked_share_over_time.png.
OVER_TIME_RUNS = 50


class ScannerRef(BaseModel):
    """A registered scanner version: what scanned an image."""

    name: str
    version: str


class Photo(BaseModel):
    """An image in the scanned folder: ``rel`` its path below the folder, ``key`` its result's cache key."""

    path: str
    rel: str
    sha256: str
    key: str


class Listing(BaseModel):
    new: list[Photo]
    cached: list[Photo]
    #: Entries of the folder that are not read (pipes, links out of it, ...), with the reason.
    skipped: list[dict[str, str]]


class Scanned(BaseModel):
    """One image's result, as cached: its faces (the scanner's dicts) or why it failed."""

    photo: Photo
    faces: list[dict[str, Any]] = []
    failed: str | None = None
    annotated: str | None = None  # relative to the run's images folder
    classes: list[str] = []  # the scanner's classes (its count_<class> columns)


def result_key(sha256: str, scanner: ScannerRef, scan_settings: Mapping[str, Any]) -> str:
    """Cache key of one image's result: its content + the scanner version + the scan settings."""
    parts = {"sha256": sha256, "scanner": scanner.name, "version": scanner.version, "settings": dict(scan_settings)}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def cache_file(settings: Settings, key: str) -> Path:
    return settings.home / CACHE_DIR / f"{key}.json"


def image_entries(folder: Path) -> tuple[list[FileEntry], list[dict[str, str]]]:
    """The image files below ``folder`` (through the one walker: regular files only), sorted,
    and the entries it does not read (hidden files and non-images are left out silently)."""
    images: list[FileEntry] = []
    skipped: list[dict[str, str]] = []
    for entry in walk(folder):
        if isinstance(entry, FileEntry):
            if is_image_name(entry.path.name):
                images.append(entry)
        elif entry.kind != "hidden":
            skipped.append({"input": entry.rel, "reason": entry.reason})
    return sorted(images, key=lambda e: e.rel), skipped


def find_new(root: Path, scanner: ScannerRef, scan_settings: Mapping[str, Any], settings: Settings,
             rescan: bool = False) -> Listing:
    """Hash every image below ``root``; those without a cached result for this scanner are new."""
    if root == settings.inbox:
        root.mkdir(parents=True, exist_ok=True)  # the inbox is ours: a fresh stack's schedule finds it empty
    if not root.is_dir():
        raise ConfigError(f"scan folder {root} does not exist or is not a folder: give an existing folder "
                          f"(or leave it empty for the inbox, MASKCLS_SCAN_INBOX={settings.inbox}).")
    entries, skipped = image_entries(root)
    new, cached = [], []
    for entry in entries:
        digest = sha256_file(entry.path)
        photo = Photo(path=str(entry.path), rel=entry.rel, sha256=digest,
                      key=result_key(digest, scanner, scan_settings))
        (cached if cache_file(settings, photo.key).exists() and not rescan else new).append(photo)
    return Listing(new=new, cached=cached, skipped=skipped)


@task(name="list-new-images", cache_policy=NO_CACHE)
def list_new_images(folder: str, scanner: ScannerRef, scan_settings: dict[str, Any], settings: Settings,
                    rescan: bool) -> Listing:
    """The folder's images this scanner version has not scanned yet (all of them with ``rescan``)."""
    root = Path(folder).expanduser()
    listing = find_new(root, scanner, scan_settings, settings, rescan)
    get_run_logger().info(f"{root}: {len(listing.new) + len(listing.cached)} images, {len(listing.new)} new for "
                          f"{scanner.name} version {scanner.version}, {len(listing.cached)} already scanned")
    return listing


_models: dict[tuple[str, str, str], Any] = {}


def _model(settings: Settings, scanner: ScannerRef) -> Any:
    """The scanner's pyfunc, loaded once per process (a version's files never change), by version
    number: the alias may move while the run goes on."""
    key = (settings.tracking_uri, scanner.name, scanner.version)
    if key not in _models:
        _models[key] = tracking.load_model(settings, f"models:/{scanner.name}/{scanner.version}")
    return _models[key]


@task(name="scan-batch", cache_policy=NO_CACHE)
def scan_batch(photos: list[Photo], scanner: ScannerRef, scan_settings: dict[str, Any], settings: Settings,
               images_dir: Path | None, blur: bool) -> list[Scanned]:
    """Decode each photo (a bad one fails alone), run the scanner on the rest in one call, and draw
    their annotated copies under ``images_dir`` (none when it is None)."""
    import pandas as pd

    results: list[Scanned] = []
    decoded: list[tuple[bytes, Any] | None] = []
    for photo in photos:
        try:
            data = read_regular(photo.path)
            decoded.append((data, read_image(data)))
            results.append(Scanned(photo=photo))
        except (DecodeError, OSError) as exc:
            decoded.append(None)
            results.append(Scanned(photo=photo, failed=exc.strerror if isinstance(exc, OSError) and exc.strerror
                                   else str(exc)))
    good = [i for i, d in enumerate(decoded) if d is not None]
    if not good:
        return results
    frame = pd.DataFrame({"image": [decoded[i][0] for i in good]})
    model = _model(settings, scanner)
    # Settings go to the scanner as MLflow params only when one is set (all off: its defaults).
    out = model.predict(frame, params=scan_settings) if any(scan_settings.values()) else model.predict(frame)
    classes = sorted(c.removeprefix("count_") for c in out.columns if c.startswith("count_"))
    errors = out["error"] if "error" in out.columns else [""] * len(good)
    for i, faces, error in zip(good, out["faces"], errors, strict=True):
        scanned = results[i]
        if error:  # the scanner could not read what OpenCV decoded here
            scanned.failed = str(error)
            continue
        scanned.faces, scanned.classes = json.loads(faces), classes
        if images_dir is not None:
            image = image_result(scanned, annotated=True)
            failure = write_annotated(images_dir, image, decoded[i][1], blur)
            scanned.annotated = image.annotated
            if failure is not None:
                get_run_logger().warning(f"{failure.input}: {failure.reason}")
    return results


@task(name="remember-results", cache_policy=NO_CACHE)
def remember(scanned: list[Scanned], settings: Settings) -> None:
    """Cache every result (a failure too: the same bytes fail again), once the run has logged them:
    a run that fails before leaves its images new for the next one."""
    for s in scanned:
        atomic_write_bytes(cache_file(settings, s.photo.key), s.model_dump_json().encode())


def open_scan(settings: Settings, folder: str) -> tuple[MlflowClient, str, ScannerRef]:
    """The scanner champion MASKCLS_SCANNER_CLASSES names, and this flow run's MLflow run."""
    client = tracking.configure(settings)
    name = SCANNER_MODELS[settings.scanner_classes]
    version = tracking.scanner_champion(client, name)
    if version is None:
        raise TrackingError(
            f"no `{CHAMPION_ALIAS}` version of {name} in {settings.tracking_uri}: a scanner is registered "
            f"when a classifier becomes champion (train one: make run), or set MASKCLS_SCANNER_CLASSES."
        )
    prefect_run = get_run_context().flow_run
    run_id = tracking.create_run(client, settings, prefect_run.name if prefect_run else None, {
        "prefect_flow_run_id": str(prefect_run.id) if prefect_run else "", "folder": folder,
    }, experiment=SCAN_EXPERIMENT)
    get_run_logger().info(f"MLflow run {run_id} in {SCAN_EXPERIMENT}; scanner {name} version {version}")
    return client, run_id, ScannerRef(name=name, version=version)


def image_result(scanned: Scanned, annotated: bool = False) -> ImageResult:
    """A cached result as the library's ImageResult (named by its path below the scanned folder)."""
    return ImageResult(scanned.photo.rel, None, None, [FaceResult.from_dict(f) for f in scanned.faces],
                       annotated=annotated_name(scanned.photo.rel, None) if annotated else scanned.annotated)


@task(name="summarise-scan", cache_policy=NO_CACHE)
def summarise(scanned: list[Scanned], listing: Listing, out_dir: Path) -> dict[str, Any]:
    """scan.csv and summary.json of this run's images (``scanned``) under ``out_dir``; the summary.
    Its failures: the photos that could not be scanned and the folder's entries that are not read."""
    result = ScanResult(images=[image_result(s) for s in scanned if s.failed is None],
                        failed=[*(Failure(s.photo.rel, s.failed) for s in scanned if s.failed is not None),
                                *(Failure(s["input"], s["reason"]) for s in listing.skipped)])
    classes = sorted({c for s in scanned for c in s.classes})
    summary = result.summary(classes)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / "scan.csv", result)
    write_summary(out_dir / "summary.json", summary)
    return summary


def scan_metrics(summary: Mapping[str, Any], listing: Listing) -> dict[str, float]:
    """The run's MLflow metrics: faces, faces_<class>, the masked share and its bounds (when any
    face was found), and how many images were scanned, already scanned, or failed."""
    metrics: dict[str, float] = {"faces": summary["faces"], "images_scanned": len(listing.new),
                                 "images_cached": len(listing.cached), "images_failed": len(summary["failed"])}
    metrics.update({f"faces_{k.removeprefix('count_')}": v for k, v in summary.items() if k.startswith("count_")})
    for key in ("masked_share", "masked_share_low", "masked_share_high"):
        if summary[key] is not None:
            metrics[key] = summary[key]
    return metrics


def share_over_time(runs: Sequence[Mapping[str, Any]]) -> list[tuple[datetime, float, float, float]]:
    """(start, masked_share, low, high) of the runs that found faces, oldest first."""
    points = [(datetime.fromtimestamp(r["start_time"] / 1000, tz=UTC), r["masked_share"],
               r.get("masked_share_low", r["masked_share"]), r.get("masked_share_high", r["masked_share"]))
              for r in runs if r.get("masked_share") is not None]
    return sorted(points)


def plot_share_over_time(points: Sequence[tuple[datetime, float, float, float]], path: Path) -> None:
    """The masked share of each run with its 95% interval, against the run's start (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    if points:
        times, share, low, high = zip(*points)
        ax.fill_between(times, low, high, alpha=0.25, label="95% Wilson interval")
        ax.plot(times, share, marker="o", label="masked share")
        ax.legend(loc="lower left")
    else:
        ax.text(0.5, 0.5, "no faces found in the recent scans", ha="center", va="center", transform=ax.transAxes)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of faces with a mask")
    ax.set_title(f"masked share over the last {OVER_TIME_RUNS} scan runs")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@task(name="log-scan", cache_policy=NO_CACHE)
def log_scan(settings: Settings, run_id: str, scanner: ScannerRef, listing: Listing, summary: dict[str, Any],
             scanned: list[Scanned], out_dir: Path) -> list[str]:
    """Metrics, scan.csv, summary.json, the annotated copies and the masked share over time into the
    MLflow run; the table artifact in Prefect; then the retention. The ids of the runs deleted."""
    logger = get_run_logger()
    client = tracking.configure(settings)
    exp_id = tracking.experiment_id(client, settings, SCAN_EXPERIMENT)
    tracking.log_metrics(client, run_id, scan_metrics(summary, listing))
    tracking.set_tags(client, run_id, {"scanner": scanner.name, "scanner_version": scanner.version,
                                       "nothing_new": str(not listing.new).lower()})
    for name in ("summary.json", "scan.csv"):
        tracking.log_file(client, run_id, out_dir / name, name)
    if (out_dir / "images").is_dir():
        tracking.log_folder(client, run_id, out_dir / "images", "images")
    plot = out_dir / "masked_share_over_time.png"
    plot_share_over_time(share_over_time(tracking.run_metrics(client, exp_id, OVER_TIME_RUNS)), plot)
    tracking.log_file(client, run_id, plot, plot.name)
    classes = sorted({c for s in scanned for c in s.classes})
    rows = [{"photo": s.photo.rel, "faces": len(s.faces),
             **{f"count_{c}": sum(f["label"] == c for f in s.faces) for c in classes},
             "failed": s.failed or ""} for s in scanned]
    link = tracking.run_url(settings, exp_id, run_id)
    create_table_artifact(table=rows or [{"photo": "(nothing new)", "faces": 0, "failed": ""}], key="scan-photos",
                          description=f"Photos scanned by {scanner.name} version {scanner.version}: "
                          f"{len(listing.new)} new, {len(listing.cached)} already scanned. MLflow run: {link}")
    if not listing.new:
        logger.info(f"nothing new: all {len(listing.cached)} images were already scanned by {scanner.name} "
                    f"version {scanner.version}")
    deleted: list[str] = []
    if settings.scan_retention_days > 0:
        cutoff_ms = int((time.time() - settings.scan_retention_days * 86400) * 1000)
        deleted = tracking.delete_runs_before(client, exp_id, cutoff_ms, keep=run_id)
        if deleted:
            logger.info(f"retention ({settings.scan_retention_days:g} days): deleted {len(deleted)} scan runs")
    return deleted
