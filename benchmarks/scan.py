"""Scan figures on face-mask-scenes, printed as one JSON object on stdout (progress on stderr).

    python -m benchmarks.scan --tune           # choose the detector settings: `tune` photos only
    python -m benchmarks.scan [--model URI]    # report: `report` photos + 640x480 collages

``--tune`` fits the box adjustment (YuNet's boxes against the annotators') as the median
offsets and size ratios of matched faces, then sweeps the score threshold for each scale
set and picks, per scale set, the threshold of the best F1 (recall and precision over all
faces). The report run uses the shipped defaults (``DetectConfig()``); with a loadable
classifier it scores labels too, otherwise detection only (and says so).

``make bench`` (benchmarks/run.py, part ``scan``) runs the report against the bench's own
champion and merges its JSON into the bench's one object, every top-level key prefixed
``scan_`` (``scan_report``, ``scan_collages``, ``scan_detect_config``, ``scan_classifier``).
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import cv2
import numpy as np
import typer

from flows.scan_cli import DEFAULT_MODEL
from maskcls.detect import DetectConfig, FaceDetector
from maskcls.scan import ScanConfig, Scanner
from maskcls.scenes import Box, Scene, evaluate, match, read_voc, scene_files, score

REPO = Path(__file__).resolve().parents[1]
SCENES = REPO.parent / "shared" / "datasets" / "face-mask-scenes"
FACES = REPO.parent / "shared" / "datasets" / "face-mask"
SCALE_SETS: list[tuple[int, ...]] = [(640,), (640, 960), (640, 1280)]
THRESHOLDS = [round(0.3 + 0.05 * k, 2) for k in range(13)]


def log(msg: str) -> None:
    print(f"[scan-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _raw(config: DetectConfig, photos: Sequence[tuple[np.ndarray, list[Box]]]) -> tuple[list[Scene], float]:
    """Detections at ``config`` (a low threshold: higher ones are a filter of these), ms per photo."""
    det = FaceDetector(config)
    start = time.perf_counter()
    scenes = [Scene("", truth, [Box(f.x, f.y, f.w, f.h, None, f.score) for f in det.detect(img)])
              for img, truth in photos]
    return scenes, 1000 * (time.perf_counter() - start) / len(photos)


def _at(scenes: list[Scene], threshold: float) -> list[Scene]:
    # Exact: greedy NMS keeps a box only against higher-scoring ones, so thresholding commutes with it.
    return [Scene(s.name, s.truth, [b for b in s.found if b.score >= threshold]) for s in scenes]


def fit_box_adjustment(scenes: list[Scene]) -> dict[str, float]:
    """Median centre offsets (in box sizes) and size ratios that move found boxes onto matched truth."""
    dx, dy, sw, sh = [], [], [], []
    for s in scenes:
        for i, j in match(s.found, s.truth):
            f, t = s.found[i], s.truth[j]
            dx.append((t.x + t.w / 2 - f.x - f.w / 2) / f.w)
            dy.append((t.y + t.h / 2 - f.y - f.h / 2) / f.h)
            sw.append(t.w / f.w)
            sh.append(t.h / f.h)
    return {k: round(statistics.median(v), 2) for k, v in
            {"box_dx": dx, "box_dy": dy, "box_w": sw, "box_h": sh}.items()}


def tune() -> dict[str, Any]:
    photos = [(cv2.imread(str(i)), read_voc(a)) for i, a in scene_files(SCENES, "tune")]
    log(f"tune: {len(photos)} photos")
    plain, _ = _raw(DetectConfig(score_threshold=0.5, scales=(640,)), photos)
    adjust = fit_box_adjustment(plain)
    log(f"box adjustment {adjust}")
    out: dict[str, Any] = {"photos": len(photos), "box_adjustment": adjust, "scale_sets": []}
    for scales in SCALE_SETS:
        scenes, ms = _raw(DetectConfig(score_threshold=THRESHOLDS[0], scales=scales, **adjust), photos)
        sweep = []
        for t in THRESHOLDS:
            r = score(_at(scenes, t))
            f1 = 2 * r["recall"] * r["precision"] / (r["recall"] + r["precision"])
            sweep.append({"threshold": t, "recall": r["recall"], "recall_ge24px": r["recall_ge24px"],
                          "precision": r["precision"], "f1": f1})
        best = max(sweep, key=lambda row: row["f1"])
        log(f"scales {scales}: {ms:.0f} ms/photo, best F1 {best}")
        out["scale_sets"].append({"scales": list(scales), "ms_per_photo": ms, "best": best, "sweep": sweep})
    return out


def collages(folder: Path, n: int = 40, seed: int = 0) -> list[tuple[Path, list[Box]]]:
    """``n`` 640x480 photos of 4-8 face images each from face-mask/ on a grey background, with
    the square each face image was pasted in (a face fills most of it: matched at IoU 0.3)."""
    rng = np.random.default_rng(seed)
    faces = sorted(p for p in FACES.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    out = []
    for k in range(n):
        canvas = np.full((480, 640, 3), 128, np.uint8)
        count = int(rng.integers(4, 9))
        cells = rng.permutation(12)[:count]  # a 4x3 grid of 160x160 cells
        placed = []
        for cell in cells:
            pick = faces[int(rng.integers(len(faces)))]
            img = cv2.imread(str(pick))
            if img is None:
                continue
            side = int(rng.integers(90, 150))
            img = cv2.resize(img, (side, side))
            x, y = int(cell % 4) * 160 + (160 - side) // 2, int(cell // 4) * 160 + (160 - side) // 2
            canvas[y:y + side, x:x + side] = img
            placed.append(Box(x, y, side, side, pick.parent.name))
        path = folder / f"collage{k:03d}.jpg"
        cv2.imwrite(str(path), canvas)
        out.append((path, placed))
    return out


def report(model: str | None) -> dict[str, Any]:
    classify, classes, labelled = _classifier(model)
    scanner = Scanner(classify, ScanConfig())
    out: dict[str, Any] = {"detect_config": DetectConfig().model_dump(mode="json"),
                           "classifier": model if labelled else "none (detection only)"}
    log("report photos")
    out["report"] = evaluate(scanner, SCENES, "report", classes, labelled=labelled)
    with tempfile.TemporaryDirectory() as tmp:
        made = collages(Path(tmp))
        start, cpu = time.perf_counter(), time.process_time()
        result = scanner.scan([p for p, _ in made])
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        found = {r.image: r.faces for r in result.images}
        hit = stray = 0
        for path, squares in made:
            centres = [(f.x + f.w / 2, f.y + f.h / 2) for f in found.get(str(path), [])]
            inside = [[b.x <= cx <= b.x + b.w and b.y <= cy <= b.y + b.h for b in squares] for cx, cy in centres]
            hit += sum(any(row[k] for row in inside) for k in range(len(squares)))
            stray += sum(not any(row) for row in inside)
        # A face fills only part of its pasted image, so a face counts as found when a box is centred on it.
        out["collages"] = {"photos": len(made), "faces": sum(len(sq) for _, sq in made),
                           "found": sum(len(v) for v in found.values()), "faces_with_a_box": hit,
                           "boxes_off_every_face": stray,
                           "photos_per_s": len(made) / elapsed, "ms_per_photo": 1000 * elapsed / len(made),
                           "cpu_ms_per_photo": 1000 * cpu / len(made)}
    return out


def _classifier(model: str | None) -> tuple[Any, list[str], bool]:
    if model:
        try:
            from maskcls.config import Settings
            from tasks import tracking

            scanning = tracking.load_scanner(Settings.from_env(), model)
            return scanning.scanner(ScanConfig()).classify, list(scanning.classifier.classes), True
        except Exception as exc:  # noqa: BLE001 - fall back to detection only, and say why
            log(f"cannot load {model} ({exc.__class__.__name__}: {exc}); detection only")
    return (lambda crops: [("face", 1.0)] * len(crops)), [], False


def main(
    tune_only: Annotated[bool, typer.Option("--tune", help="choose detector settings on the tune photos")] = False,
    model: Annotated[str, typer.Option(help="scanning model URI (its classifier labels the faces; '' for "
                                       "detection only)")] = DEFAULT_MODEL,
) -> None:
    """Print the scan figures (or, with --tune, the detector settings' sweep) as one JSON object."""
    print(json.dumps(tune() if tune_only else report(model or None), indent=2))


if __name__ == "__main__":
    typer.run(main)
