"""Data stages at 1x, 4x, 16x and 64x the shared data: seconds per 1,000 images, one JSON object
on stdout (progress on stderr).

    python -m benchmarks.scale                          # --sizes 1,4,16,64, the plot in docs/scaling.png
    python -m benchmarks.scale --sizes 1,4 --limit 300  # a quick check on 300 source images

The synthetic data are the shared faces re-rendered: each image is one source face under a
random crop (55-90% of each side, aspect and position random), a rotation of up to 10
degrees, a colour change (gain per channel, brightness, gamma), noise and a JPEG quality, its
side following the crop's (sources held at most ``SOURCE_SIDE`` a side). A size of k x holds
k times as many images as the shared folder has files; the sizes grow one folder (the 4x set
is the 1x set and more), so nothing is rendered twice. Every image is checked against all
the images before it with the pipeline's own perceptual hashes (``maskcls.data._phash`` of the
decoded JPEG, the mirror rule, ``DataConfig().phash_threshold``) by ``maskcls.data.near_pairs``;
one that lies within the threshold of an earlier image is rendered again with the next seed,
up to ``MAX_ATTEMPTS`` times. The clusters the measured ``cluster`` finds are reported at each
size (how many, the largest, how many of each size).

At each size the stages are the library calls the flow's tasks make, timed one by one:
``validate`` (``maskcls.data.validate``), ``cluster`` (``maskcls.data.cluster``), ``split``
(``maskcls.data.split``, which clusters again inside: the sum counts clustering once, inside
split), ``preprocess`` (``preprocess_files`` of every side, saved as .npy) and ``augment``
(``maskcls.augment.augment_to_file`` of the training side). After the 16x measurement, 1% more
images are added and the stages run again as the flow would run them: the work redone is the
images each stage processes again over the images it holds. The augmented file of a size is
deleted as soon as it is timed; everything lives in one temporary folder removed at the end.

``make bench PART=scale`` (benchmarks/run.py) runs this with its defaults and merges the JSON,
every top-level key prefixed ``scale_``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import cv2
import numpy as np
import typer

from maskcls.augment import N_VARIANTS, augment_to_file
from maskcls.config import PipelineConfig, load_config
from maskcls.data import _phash, cluster, near_pairs, scan, split, subset, validate
from maskcls.files import read_regular
from maskcls.parallel import cpu_count, map_ordered
from maskcls.preprocess import decode_image, preprocess_files, to_gray

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets" / "face-mask"
PLOT = REPO / "docs" / "scaling.png"
STAGES = ("validate", "cluster", "split", "preprocess", "augment")
#: The stages whose seconds add up to the data-stage work (clustering is inside split).
SUMMED = ("validate", "split", "preprocess", "augment")
#: Sources are held at most this many pixels a side (memory, and the rendering's cost).
SOURCE_SIDE = 256
#: The smallest side a rendered image gets (a small source is enlarged).
MIN_SIDE = 32
#: Renderings of one image before it is kept even though it is near an earlier one.
MAX_ATTEMPTS = 8
#: Share of the 16x set added to measure the work redone.
GROWTH = 0.01
#: Free disk left beside the augmented file; a size whose augmentation would not fit is not augmented.
DISK_MARGIN = 4 << 30


def log(msg: str) -> None:
    print(f"[scale-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- the synthetic data -------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """One shared face: its class and its pixels (BGR, at most SOURCE_SIDE a side)."""

    label: str
    image: np.ndarray


def load_sources(root: Path, cfg: PipelineConfig, limit: int | None) -> tuple[list[Source], int]:
    """The distinct images validation keeps in ``root`` (a class-balanced ``limit`` of them), decoded,
    and how many image files the folder holds (the size of 1x; ``limit`` with a limit)."""
    manifest = validate(root, cfg.data)
    items = manifest.items
    if limit is not None and limit < len(items):
        items = subset(items, manifest.classes, limit, seed=0)
    files = len(scan(root)[0]) if limit is None else len(items)

    def load(item: Any) -> Source:
        img = decode_image(read_regular(root / item.path))
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        h, w = img.shape[:2]
        if max(h, w) > SOURCE_SIDE:
            f = SOURCE_SIDE / max(h, w)
            img = cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
        return Source(item.label, np.ascontiguousarray(img))

    return list(map_ordered(load, items)), files


class Renderer:
    """Image ``j`` of the synthetic set: source ``j mod len(sources)``, rendered with seed (seed, j, attempt)."""

    def __init__(self, sources: Sequence[Source], seed: int) -> None:
        self.sources = sources
        self.seed = seed
        bank = np.random.default_rng([seed, 2**31])
        side = SOURCE_SIDE + MIN_SIDE
        # Noise tiles (one positive and one negative half per level), cut at random offsets: drawing
        # fresh normals for every image would cost more than the rest of its rendering.
        self.noise = [
            tuple(np.clip(np.abs(bank.normal(0, sigma, (side, side, 3))), 0, 255).astype(np.uint8) for _ in range(2))
            for sigma in (2.0, 4.0, 6.0, 8.0)
        ]

    def label(self, j: int) -> str:
        return self.sources[j % len(self.sources)].label

    def render(self, j: int, attempt: int = 0) -> np.ndarray:
        src = self.sources[j % len(self.sources)].image
        rng = np.random.default_rng([self.seed, j, attempt])
        h, w = src.shape[:2]
        share, aspect = rng.uniform(0.55, 0.9), rng.uniform(0.85, 1.15)
        cw, ch = min(w, w * share * math.sqrt(aspect)), min(h, h * share / math.sqrt(aspect))
        cx, cy = rng.uniform(cw / 2, w - cw / 2), rng.uniform(ch / 2, h - ch / 2)
        zoom = max(1.0, MIN_SIDE / min(cw, ch))
        out_w = min(SOURCE_SIDE, max(MIN_SIDE, round(cw * zoom)))
        out_h = min(SOURCE_SIDE, max(MIN_SIDE, round(ch * zoom)))
        m = cv2.getRotationMatrix2D((cx, cy), rng.uniform(-10, 10), zoom)
        m[0, 2] += out_w / 2 - cx
        m[1, 2] += out_h / 2 - cy
        img = cv2.warpAffine(src, m, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        x = np.arange(256, dtype=np.float64) / 255
        gains, offset, gamma = rng.uniform(0.75, 1.25, 3), rng.uniform(-25, 25), rng.uniform(0.75, 1.35)
        lut = np.clip(255 * x[:, None] ** gamma * gains[None, :] + offset, 0, 255).astype(np.uint8)
        img = cv2.LUT(img, lut.reshape(256, 1, 3))
        pos, neg = self.noise[int(rng.integers(len(self.noise)))]
        y1, x1, y2, x2 = (int(v) for v in rng.integers(0, pos.shape[0] - SOURCE_SIDE, 4))
        return cv2.subtract(cv2.add(img, pos[y1 : y1 + out_h, x1 : x1 + out_w]), neg[y2 : y2 + out_h, x2 : x2 + out_w])

    def encode(self, j: int, attempt: int = 0) -> bytes:
        quality = int(np.random.default_rng([self.seed, j, attempt, 1]).integers(80, 96))
        ok, buf = cv2.imencode(".jpg", self.render(j, attempt), [cv2.IMWRITE_JPEG_QUALITY, quality])
        assert ok
        return buf.tobytes()


def hashes_of(data: bytes) -> tuple[int, int]:
    """The perceptual hash and mirror hash validation computes for these bytes."""
    gray = to_gray(decode_image(data))
    return _phash(gray), _phash(gray[:, ::-1])


def rerender_needed(h: np.ndarray, m: np.ndarray, threshold: int, start: int) -> np.ndarray:
    """The images from ``start`` on that lie within ``threshold`` of an earlier image (hash or mirror),
    sorted: of each near pair, the later one is rendered again, so the images before ``start`` stay."""
    a, b = near_pairs(h, m, threshold)
    later = np.maximum(a, b)
    return np.unique(later[later >= start])


@dataclass
class Synthetic:
    """The growing synthetic folder: its images' hashes, and what generating them took."""

    root: Path
    renderer: Renderer
    threshold: int
    h: np.ndarray
    m: np.ndarray
    n: int = 0
    seconds: float = 0.0
    rerendered: int = 0
    kept_near: int = 0
    sizes: dict[int, int] = field(default_factory=dict)  # bytes of each image file

    def path(self, j: int) -> Path:
        return self.root / self.renderer.label(j) / f"g{j:07d}.jpg"

    def _write(self, j: int, attempt: int) -> tuple[int, int, int]:
        data = self.renderer.encode(j, attempt)
        self.path(j).write_bytes(data)
        return (*hashes_of(data), len(data))

    def grow(self, total: int) -> None:
        """Add images up to ``total``, each farther than the threshold from every image before it."""
        start, t0 = self.n, time.perf_counter()
        if total <= start:
            return
        self.h = np.concatenate([self.h[:start], np.zeros(total - start, np.uint64)])
        self.m = np.concatenate([self.m[:start], np.zeros(total - start, np.uint64)])
        for label in {self.renderer.label(j) for j in range(start, min(total, start + len(self.renderer.sources)))}:
            (self.root / label).mkdir(parents=True, exist_ok=True)
        todo = np.arange(start, total)
        for attempt in range(MAX_ATTEMPTS):
            for j, (ph, phm, size) in zip(todo, map_ordered(lambda j, a=attempt: self._write(int(j), a), todo),
                                          strict=True):
                self.h[j], self.m[j], self.sizes[int(j)] = ph, phm, size
            todo = rerender_needed(self.h, self.m, self.threshold, start)
            if not len(todo):
                break
            if attempt + 1 < MAX_ATTEMPTS:
                self.rerendered += len(todo)
        self.kept_near += len(todo)
        self.n = total
        self.seconds += time.perf_counter() - t0

    def report(self) -> dict[str, Any]:
        return {"images": self.n, "seconds": self.seconds, "per_1000_s": 1000 * self.seconds / max(1, self.n),
                "rerendered": self.rerendered, "kept_near_an_earlier_image": self.kept_near,
                "mb_on_disk": sum(self.sizes.values()) / 2**20}


# --- the stages ------------------------------------------------------------------------------


def cluster_sizes(groups: list[int]) -> dict[str, Any]:
    """How many clusters, the largest, and how many clusters of each size."""
    sizes = Counter(Counter(groups).values())
    return {"clusters": len(set(groups)), "largest": max(sizes, default=0),
            "of_size": {str(k): sizes[k] for k in sorted(sizes)}}


def run_stages(root: Path, work: Path, cfg: PipelineConfig) -> tuple[dict[str, float], dict[str, int], dict[str, Any]]:
    """Every data stage over ``root``: seconds and images processed per stage, and the clusters."""
    seconds: dict[str, float] = {}
    images: dict[str, int] = {}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        out = fn()
        seconds[name] = time.perf_counter() - t0
        log(f"  {name}: {seconds[name]:.1f}s")
        return out

    decoded: list[int] = [0]
    manifest = timed("validate", lambda: validate(root, cfg.data, progress=lambda n, _: decoded.__setitem__(0, n)))
    images["validate"] = decoded[0]
    groups = timed("cluster", lambda: cluster(manifest.items, cfg.data.phash_threshold))
    images["cluster"] = images["split"] = len(manifest.items)
    sides = timed("split", lambda: split(manifest, cfg.data))

    def preprocess() -> None:
        for side in ("train", "val", "test"):
            paths = [i.path for i in sides.side(side)]
            np.save(work / f"x_{side}.npy", preprocess_files(root, paths, cfg.preprocess))

    timed("preprocess", preprocess)
    images["preprocess"] = sum(len(sides.side(s)) for s in ("train", "val", "test"))
    train = np.load(work / "x_train.npy", mmap_mode="r")
    out = work / "augmented.npy"
    need = N_VARIANTS * train.nbytes + DISK_MARGIN
    free = shutil.disk_usage(work).free
    if need > free:
        log(f"  augment: skipped, {need / 2**30:.1f} GB needed, {free / 2**30:.1f} GB free")
        images["augment"] = 0
    else:
        timed("augment", lambda: augment_to_file(train, cfg.augment.shift, out))
        images["augment"] = len(train)
    out.unlink(missing_ok=True)  # the largest file of a size: gone as soon as it is timed
    counts = {"kept": len(manifest.items), "skipped": len(manifest.skipped), "train": len(sides.train),
              "val": len(sides.val), "test": len(sides.test)}
    return seconds, images, {**counts, "near_duplicates": cluster_sizes(groups)}


def per_1000(seconds: dict[str, float], n: int) -> dict[str, float]:
    rates = {k: 1000 * v / n for k, v in seconds.items()}
    if all(k in seconds for k in SUMMED):
        rates["data_stages"] = sum(rates[k] for k in SUMMED)
    return rates


def plot(sizes: list[int], rates: dict[str, dict[str, float]], path: Path, note: str) -> None:
    """Seconds per 1,000 images of each stage (and their sum) against the size, log x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name in (*STAGES, "data_stages"):
        ys = [rates[str(k)].get(name) for k in sizes]
        if all(y is not None for y in ys):
            style = {"linewidth": 2.5, "color": "black"} if name == "data_stages" else {}
            ax.plot(sizes, ys, marker="o", label="summed (cluster inside split)" if name == "data_stages" else name,
                    **style)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(sizes, [f"{k}x" for k in sizes])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("dataset size (x the shared data)")
    ax.set_ylabel("seconds per 1,000 images (log)")
    ax.set_title(f"Data stages at growing sizes\n{note}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def measure(sizes: list[int], source: Path, limit: int | None, seed: int, plot_path: Path | None,
            work_dir: Path | None) -> dict[str, Any]:
    t_start, load_start = time.perf_counter(), os.getloadavg()[0]
    cfg = load_config("default")
    threshold = cfg.data.phash_threshold
    work = Path(tempfile.mkdtemp(prefix="maskcls-scale-", dir=work_dir))
    try:
        log(f"sources: {source}{f' (a subset of {limit})' if limit else ''}; {cpu_count()} cores, "
            f"load average {load_start:.1f}")
        sources, base = load_sources(source, cfg, limit)
        log(f"{len(sources)} distinct source images, 1x = {base} images; working in {work}")
        data = Synthetic(work / "images", Renderer(sources, seed), threshold,
                         np.zeros(0, np.uint64), np.zeros(0, np.uint64))
        arrays = work / "arrays"
        arrays.mkdir()
        measured: dict[str, Any] = {}
        rates: dict[str, dict[str, float]] = {}
        incremental: dict[str, Any] | None = None
        for k in sorted(sizes):
            log(f"{k}x: generating up to {k * base} images")
            data.grow(k * base)
            log(f"{k}x: {data.n} images ({data.rerendered} re-rendered so far); the stages")
            seconds, _, found = run_stages(data.root, arrays, cfg)
            rates[str(k)] = per_1000(seconds, data.n)
            measured[str(k)] = {"images": data.n, "seconds": seconds, **found}
            if k == 16 or (incremental is None and k == max(sizes) and 16 not in sizes):
                incremental = grow_and_rerun(data, k, arrays, cfg, seconds)
        result: dict[str, Any] = {
            "source": str(source),
            "source_images": base,
            "distinct_sources": len(sources),
            "sizes": sorted(sizes),
            "threshold": threshold,
            "cores": cpu_count(),
            # Other work on the machine slows every figure: the 1-minute load average before and after.
            "load_average": {"start": load_start, "end": os.getloadavg()[0]},
            "per_1000_s": rates,
            "measured": measured,
            "generator": {**data.report(), "max_attempts": MAX_ATTEMPTS, "seed": seed},
            "incremental": incremental,
        }
        if incremental is not None:
            result[f"redo_share_{incremental['base_size']}"] = incremental["redo_share"]
        top = str(max(sizes))
        if "1" in rates and top != "1" and "data_stages" in rates[top] and "data_stages" in rates["1"]:
            result[f"data_stages_ratio_{top}x"] = rates[top]["data_stages"] / rates["1"]["data_stages"]
        result[f"cluster_s_{top}x"] = measured[top]["seconds"]["cluster"]
        if plot_path is not None:
            plot(sorted(sizes), rates, plot_path, f"1x = {base:,} images; {cpu_count()} cores; "
                 f"load average {load_start:.1f} at the start")
            result["plot"] = str(plot_path)
        result["seconds"] = time.perf_counter() - t_start
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def grow_and_rerun(data: Synthetic, k: int, arrays: Path, cfg: PipelineConfig,
                   before: dict[str, float]) -> dict[str, Any]:
    """Add GROWTH more images to the k x set and run the stages again, as the flow would.

    Every data stage's cache key holds the dataset's fingerprint (the folder's, then the
    manifest's), which a new image changes: today each stage runs again over every image.
    """
    base = data.n
    added = max(1, round(GROWTH * base))
    log(f"{k}x + {GROWTH:.0%}: adding {added} images, then the stages again")
    data.grow(base + added)
    seconds, images, _ = run_stages(data.root, arrays, cfg)
    held = {"validate": data.n, "cluster": images["cluster"], "split": images["split"],
            "preprocess": images["preprocess"], "augment": images["augment"]}
    redone = sum(images[s] for s in SUMMED) / max(1, sum(held[s] for s in SUMMED))
    return {
        "base_size": f"{k}x",
        "base_images": base,
        "added_images": added,
        "stages": {s: {"images_processed": images[s], "images_held": held[s], "seconds": seconds.get(s)}
                   for s in STAGES},
        "rerun_s": sum(seconds.get(s, 0.0) for s in SUMMED),
        "base_run_s": sum(before.get(s, 0.0) for s in SUMMED),
        "redo_share": redone,
        "new_images_share": added / data.n,
        "how": "every data stage's cache key holds the dataset fingerprint, which any new image changes, so "
               "each stage runs again over every image; redo_share is the images the stages process again "
               "(validate, split, preprocess, augment) over the images they hold",
    }


def main(
    sizes: Annotated[str, typer.Option(help="Sizes as multiples of the shared data, comma-separated.")] = "1,4,16,64",
    limit: Annotated[int | None, typer.Option(
        help="Use this many source images (class-balanced) and make 1x that many: a quick check.")] = None,
    source: Annotated[Path, typer.Option(help="Folder of class folders the faces come from.")] = SHARED,
    seed: Annotated[int, typer.Option(help="Seed of the renderings.")] = 0,
    plot_path: Annotated[Path | None, typer.Option(
        "--plot", help="Where the plot goes (docs/scaling.png by default).")] = PLOT,
    work_dir: Annotated[Path | None, typer.Option(
        help="Folder the temporary data go under (default: the system's temporary folder).")] = None,
) -> None:
    """Time the data stages at growing synthetic sizes; print one JSON object."""
    try:
        wanted = sorted({int(s) for s in sizes.split(",") if s.strip()})
    except ValueError:
        wanted = []
    if not wanted or min(wanted) < 1:
        raise typer.BadParameter("sizes must be positive whole multiples, e.g. 1,4,16,64", param_hint="--sizes")
    # A stopped bench still removes its temporary data (tens of GB at 64x): SIGTERM unwinds like Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print(json.dumps(measure(wanted, source, limit, seed, plot_path, work_dir), indent=2))


if __name__ == "__main__":
    typer.run(main)
