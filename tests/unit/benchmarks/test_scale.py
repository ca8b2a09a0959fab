"""benchmarks/scale.py: the synthetic generator's distinctness check, on hand-made hashes and on a
handful of rendered images; the part's place in benchmarks/run.py."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks.scale import Renderer, Source, Synthetic, hashes_of, rerender_needed
from maskcls.config import DataConfig
from maskcls.data import cluster, validate

THRESHOLD = DataConfig().phash_threshold


def _bits(*positions: int) -> int:
    return sum(1 << p for p in positions)


def test_the_later_image_of_a_near_pair_is_rendered_again_never_an_earlier_one() -> None:
    far_a, far_b, far_c = _bits(*range(32)), _bits(*range(32, 64)), _bits(*range(16, 48))
    near_a = far_a ^ _bits(0, 1, 2)  # 3 bits from far_a
    h = np.array([far_a, far_b, near_a, far_c, far_c ^ 1, far_b ^ _bits(*range(10))], dtype=np.uint64)
    m = np.array([far_b, far_a, far_b, 0, 0, 0], dtype=np.uint64)
    # 2 is near 0 (old): 2 again; 4 is near 3 (both new): the later, 4; 5 is 10 bits from 1: kept.
    assert rerender_needed(h, m, THRESHOLD, start=2).tolist() == [2, 4]
    # Among old images nothing is redone, however near.
    assert rerender_needed(h, m, THRESHOLD, start=5).tolist() == []
    # The mirror rule: 1's mirror hash is 0's hash.
    assert rerender_needed(h[:2], m[:2], THRESHOLD, start=1).tolist() == [1]


def _sources(n: int) -> list[Source]:
    rng = np.random.default_rng(0)
    out = []
    for k in range(n):
        base = rng.integers(0, 256, size=(6, 6, 3)).astype(np.float32)
        img = np.clip(cv2.resize(base, (90 + 10 * k, 100), interpolation=cv2.INTER_CUBIC), 0, 255).astype(np.uint8)
        out.append(Source(("with_mask", "without_mask")[k % 2], img))
    return out


def _min_distance(h: np.ndarray, m: np.ndarray) -> int:
    d = np.minimum(np.bitwise_count(h[:, None] ^ h[None, :]), np.bitwise_count(h[:, None] ^ m[None, :]))
    np.fill_diagonal(d, 64)
    return int(d.min())


def _synthetic(root: Path, renderer: Renderer) -> Synthetic:
    return Synthetic(root, renderer, THRESHOLD, np.zeros(0, np.uint64), np.zeros(0, np.uint64))


def test_rendered_images_are_farther_apart_than_the_threshold_and_validate_sees_no_cluster(tmp_path: Path) -> None:
    data = _synthetic(tmp_path / "a", Renderer(_sources(4), seed=0))
    data.grow(12)
    data.grow(20)  # a second batch is checked against the first
    files = sorted(p.relative_to(data.root).as_posix() for p in data.root.rglob("*.jpg"))
    assert len(files) == 20 and {f.split("/")[0] for f in files} == {"with_mask", "without_mask"}
    assert data.kept_near == 0
    assert _min_distance(data.h, data.m) > THRESHOLD
    # The hashes checked are those validation computes from the files.
    manifest = validate(data.root, DataConfig(min_per_class=2))
    assert len(manifest.items) == 20 and not manifest.skipped
    by_path = {i.path: (i.phash, i.phash_mirror) for i in manifest.items}
    assert all(by_path[data.path(j).relative_to(data.root).as_posix()] == (int(data.h[j]), int(data.m[j]))
               for j in range(20))
    assert len(set(cluster(manifest.items, THRESHOLD))) == 20


class _SameFirst(Renderer):
    """Every image's first rendering is image 0's: all near-duplicates until rendered again."""

    def render(self, j: int, attempt: int = 0) -> np.ndarray:
        return super().render(0 if attempt == 0 else j, attempt)


def test_a_near_duplicate_rendering_is_rendered_again(tmp_path: Path) -> None:
    data = _synthetic(tmp_path, _SameFirst(_sources(3), seed=0))
    data.grow(6)
    assert data.rerendered >= 5  # images 1..5 began as copies of image 0
    assert data.kept_near == 0
    assert _min_distance(data.h, data.m) > THRESHOLD


def test_the_renderings_are_deterministic(tmp_path: Path) -> None:
    sources = _sources(3)
    one, two = _synthetic(tmp_path / "one", Renderer(sources, seed=5)), _synthetic(tmp_path / "two", Renderer(sources, 5))
    one.grow(8)
    two.grow(3)
    two.grow(8)  # grown in other steps
    for j in range(8):
        assert one.path(j).read_bytes() == (tmp_path / "two" / one.path(j).relative_to(one.root)).read_bytes()
    other = Renderer(sources, seed=6)
    assert hashes_of(other.encode(0)) != hashes_of(Renderer(sources, 5).encode(0))


def test_the_scale_part_runs_only_when_asked_for_and_has_its_targets() -> None:
    from benchmarks.run import plan, targets

    assert "scale" not in plan(None)
    assert plan("scale") == ["scale"]
    result = {"scale_wall_s": 2000.0, "scale_data_stages_ratio_64x": 1.1, "scale_cluster_s_64x": 75.0,
              "scale_redo_share_16x": 1.0}
    assert targets(result) == {"scale<=40min": True, "scale_data_stages_64x<=1.3x_1x": True,
                               "scale_cluster_64x<=60s": False, "scale_1%_new_redo<=10%": False}


@pytest.mark.parametrize("sizes", ["0,4", "x", ""])
def test_sizes_must_be_positive_multiples(sizes: str) -> None:
    import typer
    from typer.testing import CliRunner

    from benchmarks.scale import main

    app = typer.Typer()
    app.command()(main)
    result = CliRunner().invoke(app, ["--sizes", sizes])
    assert result.exit_code != 0 and "sizes" in result.output
