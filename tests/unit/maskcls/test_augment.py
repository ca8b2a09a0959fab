"""maskcls.augment: the 32 variants (flip x up x down x left x right), counts, file output, labels."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from maskcls import augment as A


def _ref_shift(img: np.ndarray, direction: str, s: int) -> np.ndarray:
    """Move the content of one (h, w, c) image by s pixels; uncovered pixels are black."""
    out = np.zeros_like(img)
    if direction == "up":
        out[:-s] = img[s:]
    elif direction == "down":
        out[s:] = img[:-s]
    elif direction == "left":
        out[:, :-s] = img[:, s:]
    elif direction == "right":
        out[:, s:] = img[:, :-s]
    else:  # pragma: no cover - test helper misuse
        raise AssertionError(direction)
    return out


def _reference(img: np.ndarray, ops: tuple[bool, bool, bool, bool, bool], s: int) -> np.ndarray:
    """The documented order: flip, up, down, left, right; each applied or not."""
    flip, up, down, left, right = ops
    x = img.copy()
    if flip:
        x = np.fliplr(x)
    for on, direction in ((up, "up"), (down, "down"), (left, "left"), (right, "right")):
        if on:
            x = _ref_shift(x, direction, s)
    return x


ALL_OPS = list(itertools.product((False, True), repeat=5))


def test_there_are_32_variants_each_a_distinct_subset_and_index_0_is_the_original() -> None:
    assert A.N_VARIANTS == 32
    assert len(A.VARIANTS) == 32
    assert len(set(A.VARIANTS)) == 32
    assert set(A.VARIANTS) == set(ALL_OPS)
    assert A.VARIANTS[0] == (False,) * 5
    assert A.OPERATIONS == ("flip", "up", "down", "left", "right")
    assert A.augmented_count(3470) == 111_040


def test_article_count_3470_images_give_111040_samples(tmp_path: Path) -> None:
    x = np.zeros((3470, 50, 50, 1), dtype=np.uint8)
    x[:, 10:40, 10:40] = 200
    out = tmp_path / "aug.npy"
    A.augment_to_file(x, 3, out, chunk=1024)
    arr = np.load(out, mmap_mode="r")
    assert arr.shape == (111_040, 50, 50, 1)
    assert arr.dtype == np.uint8
    # Spot-check the last image's variants (the last, partial chunk was written).
    last = np.asarray(arr[-32:])
    for k, ops in enumerate(A.VARIANTS):
        np.testing.assert_array_equal(last[k], _reference(x[-1], ops, 3))
    del arr


@pytest.mark.parametrize("shift", [1, 3, 5])
@pytest.mark.parametrize("channels", [1, 3])
def test_every_variant_matches_an_independent_reference(shift: int, channels: int) -> None:
    rng = np.random.default_rng(shift * 10 + channels)
    x = rng.integers(1, 256, size=(4, 12, 14, channels), dtype=np.uint8)  # non-square, no zeros
    out = A.augment_batch(x, shift)
    assert out.shape == (4 * 32, 12, 14, channels)
    assert out.dtype == np.uint8
    for i in range(len(x)):
        for k, ops in enumerate(A.VARIANTS):
            np.testing.assert_array_equal(out[i * 32 + k], _reference(x[i], ops, shift), err_msg=f"image {i} ops {ops}")


def test_variant_applies_one_operation_at_a_time() -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(1, 256, size=(2, 8, 8, 1), dtype=np.uint8)
    names = A.OPERATIONS
    for j, name in enumerate(names):
        flags = tuple(i == j for i in range(5))
        got = A.variant(x, flags, 2)
        for i in range(2):
            want = np.fliplr(x[i]) if name == "flip" else _ref_shift(x[i], name, 2)
            np.testing.assert_array_equal(got[i], want, err_msg=name)


def test_variant_zero_is_the_original() -> None:
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, size=(3, 10, 10, 1), dtype=np.uint8)
    out = A.augment_batch(x, 3)
    np.testing.assert_array_equal(out[0::32], x)


def test_all_32_variants_of_a_random_image_are_distinct() -> None:
    rng = np.random.default_rng(3)
    x = rng.integers(1, 256, size=(1, 16, 16, 1), dtype=np.uint8)
    out = A.augment_batch(x, 3)
    assert len({v.tobytes() for v in out}) == 32


def test_augment_does_not_modify_its_input() -> None:
    rng = np.random.default_rng(4)
    x = rng.integers(0, 256, size=(3, 10, 10, 1), dtype=np.uint8)
    before = x.copy()
    A.augment_batch(x, 2)
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("chunk", [1, 3, 100])
def test_augment_to_file_equals_augment_batch(tmp_path: Path, chunk: int) -> None:
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, size=(7, 10, 9, 1), dtype=np.uint8)
    out = tmp_path / "v.npy"
    seen: list[tuple[int, int]] = []
    A.augment_to_file(x, 2, out, chunk=chunk, progress=lambda a, b: seen.append((a, b)))
    on_disk = np.load(out)
    np.testing.assert_array_equal(on_disk, A.augment_batch(x, 2))
    assert seen[-1] == (7, 7)


def test_augment_to_file_reads_a_memory_mapped_input(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    x = rng.integers(0, 256, size=(5, 8, 8, 1), dtype=np.uint8)
    src = tmp_path / "x.npy"
    np.save(src, x)
    out = tmp_path / "v.npy"
    A.augment_to_file(np.load(src, mmap_mode="r"), 1, out, chunk=2)
    np.testing.assert_array_equal(np.load(out), A.augment_batch(x, 1))


def test_labels_repeat_32_times_in_image_major_order() -> None:
    y = np.array([1, 0, 2, 0])
    got = A.augment_labels(y)
    want = np.array([label for label in y for _ in range(32)])
    np.testing.assert_array_equal(got, want)
    assert len(got) == A.augmented_count(len(y))


def test_labels_line_up_with_images() -> None:
    # Each image is uniformly its own label value, so an image's variants keep its value in the centre.
    x = np.stack([np.full((9, 9, 1), v, dtype=np.uint8) for v in (10, 20, 30)])
    y = np.array([10, 20, 30])
    xa, ya = A.augment_batch(x, 2), A.augment_labels(y)
    assert len(xa) == len(ya)
    np.testing.assert_array_equal(xa[:, 4, 4, 0], ya)


@pytest.mark.parametrize("shift", [0, -1, 10, 11])
def test_bad_shift_is_a_value_error(shift: int) -> None:
    x = np.zeros((2, 10, 12, 1), dtype=np.uint8)
    with pytest.raises(ValueError, match="shift"):
        A.augment_batch(x, shift)


def test_non_batch_input_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        A.augment_batch(np.zeros((10, 10, 1), dtype=np.uint8), 2)
