"""Annotated scene photos (PASCAL VOC boxes): read them, match found faces to them, score a scan.

Used to choose the detector's settings on the ``tune`` photos of face-mask-scenes and to
report detection and labelling figures on its ``report`` photos.
"""

from __future__ import annotations

import csv
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from maskcls.scan import Scanner

MASKED = "with_mask"


@dataclass(frozen=True)
class Box:
    """A face box (x, y, w, h in the photo's pixels) with a class and, for found faces, a score."""

    x: float
    y: float
    w: float
    h: float
    label: str | None = None
    score: float = 1.0


@dataclass
class Scene:
    """One photo: its annotated faces and the faces a scan found in it."""

    name: str
    truth: list[Box]
    found: list[Box] = field(default_factory=list)


def read_voc(path: Path) -> list[Box]:
    """The ``<object>`` boxes of a PASCAL VOC file (``xmin ymin xmax ymax`` -> x, y, w, h)."""
    boxes = []
    for obj in ET.parse(path).getroot().iter("object"):
        bb = obj.find("bndbox")
        name = obj.findtext("name")
        if bb is None or name is None:
            continue
        x0, y0, x1, y1 = (float(bb.findtext(k) or "nan") for k in ("xmin", "ymin", "xmax", "ymax"))
        boxes.append(Box(x0, y0, x1 - x0, y1 - y0, name.strip()))
    return boxes


def scene_files(root: Path, part: str) -> list[tuple[Path, Path]]:
    """(image, annotation) of every photo of ``part`` (``tune`` or ``report``) in ``root/splits.csv``."""
    with (root / "splits.csv").open(newline="") as fh:
        names = sorted(row["image"] for row in csv.DictReader(fh) if row["part"] == part)
    if not names:
        raise ValueError(f"{root / 'splits.csv'} lists no photo in part {part!r}")
    return [(root / "images" / n, root / "annotations" / (Path(n).stem + ".xml")) for n in names]


def iou(a: Box, b: Box) -> float:
    iw = max(0.0, min(a.x + a.w, b.x + b.w) - max(a.x, b.x))
    ih = max(0.0, min(a.y + a.h, b.y + b.h) - max(a.y, b.y))
    inter = iw * ih
    union = a.w * a.h + b.w * b.h - inter
    return inter / union if union > 0 else 0.0


def match(found: Sequence[Box], truth: Sequence[Box], threshold: float = 0.5) -> list[tuple[int, int]]:
    """(found index, truth index) pairs: each found box, best score first, takes the unmatched
    annotated box it overlaps most, if that IoU reaches ``threshold`` (the PASCAL VOC rule)."""
    taken: set[int] = set()
    pairs = []
    for i in sorted(range(len(found)), key=lambda k: -found[k].score):
        best, best_iou = -1, threshold
        for j, t in enumerate(truth):
            if j not in taken and (v := iou(found[i], t)) >= best_iou:
                best, best_iou = j, v
        if best >= 0:
            taken.add(best)
            pairs.append((i, best))
    return pairs


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def score(scenes: Sequence[Scene], min_width: float = 24, iou_threshold: float = 0.5,
          classes: Sequence[str] | None = None) -> dict[str, Any]:
    """Detection recall and precision (overall and for faces at least ``min_width`` wide) and,
    when the found faces carry labels, label accuracy on matched faces, each class's recall,
    per-photo count errors and the masked-share error. ``classes`` are the classifier's classes:
    annotated faces of any other class are reported apart, not counted as errors."""
    truths = found = matched = big = big_matched = 0
    labelled = any(b.label is not None for s in scenes for b in s.found)
    confusion: Counter[tuple[str, str]] = Counter()
    count_err: dict[str, float] = Counter()
    true_masked = found_masked = 0
    for s in scenes:
        pairs = match(s.found, s.truth, iou_threshold)
        hit = {j for _, j in pairs}
        truths += len(s.truth)
        found += len(s.found)
        matched += len(pairs)
        big += sum(t.w >= min_width for t in s.truth)
        big_matched += sum(s.truth[j].w >= min_width for j in hit)
        if labelled:
            for i, j in pairs:
                confusion[(s.truth[j].label or "", s.found[i].label or "")] += 1
            t_counts, f_counts = Counter(t.label for t in s.truth), Counter(b.label for b in s.found)
            for c in set(t_counts) | set(f_counts) | set(classes or ()):
                count_err[c] += abs(t_counts[c] - f_counts[c])
            true_masked += t_counts[MASKED]
            found_masked += f_counts[MASKED]
    out: dict[str, Any] = {
        "photos": len(scenes), "faces": truths, f"faces_ge{min_width:g}px": big, "found": found,
        "recall": _ratio(matched, truths), f"recall_ge{min_width:g}px": _ratio(big_matched, big),
        "precision": _ratio(matched, found),
    }
    if not labelled:
        return out
    known = set(classes) if classes else {t for t, _ in confusion}
    scored = {k: n for k, n in confusion.items() if k[0] in known}
    out["label_accuracy"] = _ratio(sum(n for (t, p), n in scored.items() if t == p), sum(scored.values()))
    for c in sorted(known):
        out[f"recall_{c}"] = _ratio(scored.get((c, c), 0), sum(n for (t, _), n in scored.items() if t == c))
    for t in sorted({t for t, _ in confusion} - known):  # e.g. mask_weared_incorrect for a 2-class model
        out[f"answers_for_{t}"] = {p: n for (tt, p), n in sorted(confusion.items()) if tt == t}
    for c in sorted(count_err):
        out[f"count_mae_{c}"] = count_err[c] / len(scenes)
    true_share, found_share = _ratio(true_masked, truths), _ratio(found_masked, found)
    out["masked_share_true"], out["masked_share_found"] = true_share, found_share
    out["masked_share_error"] = None if true_share is None or found_share is None else found_share - true_share
    return out


def evaluate(scanner: "Scanner", root: Path, part: str = "report", classes: Sequence[str] = (),
             labelled: bool = True) -> dict[str, Any]:
    """Scan the ``part`` photos of a scene folder (end to end: read, decode, detect, classify) and
    score the result against their annotations; ``labelled=False`` scores detection only."""
    files = scene_files(Path(root), part)
    start, cpu = time.perf_counter(), time.process_time()
    result = scanner.scan([image for image, _ in files])
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    by_path = {r.image: r for r in result.images}
    scenes = []
    for image, annotation in files:
        r = by_path.get(str(image))
        found = [] if r is None or r.whole_image else [
            Box(f.x, f.y, f.w, f.h, f.label if labelled else None, f.detector_score or 0.0) for f in r.faces]
        scenes.append(Scene(image.name, read_voc(annotation), found))
    out = score(scenes, classes=classes)
    out["failed"] = [f.input for f in result.failed]
    out["seconds"] = elapsed
    out["photos_per_s"] = len(files) / elapsed
    out["ms_per_photo"] = 1000 * elapsed / len(files)
    # CPU time of this process (all its threads): what a photo costs whatever else shares the machine.
    out["cpu_ms_per_photo"] = 1000 * cpu / len(files)
    return out
