"""The 32 variants of every training image, vectorised, written to disk as uint8.

Each variant is one subset of five independent operations, applied in this order:
horizontal flip, shift up, shift down, shift left, shift right (2^5 = 32). Shifts
fill the uncovered edge with black, as the article's shifts did.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import numpy as np

OPERATIONS = ("flip", "up", "down", "left", "right")
#: Every subset of OPERATIONS as a tuple of booleans; index 0 is the original image.
VARIANTS: tuple[tuple[bool, ...], ...] = tuple(itertools.product((False, True), repeat=len(OPERATIONS)))
N_VARIANTS = len(VARIANTS)


def augmented_count(n_images: int) -> int:
    return n_images * N_VARIANTS


def _shift(x: np.ndarray, axis: int, step: int) -> np.ndarray:
    """Move content by ``step`` pixels along ``axis`` (1 = rows, 2 = columns), zero-filled."""
    out = np.zeros_like(x)
    src = [slice(None)] * x.ndim
    dst = [slice(None)] * x.ndim
    if step > 0:
        src[axis], dst[axis] = slice(0, -step), slice(step, None)
    else:
        src[axis], dst[axis] = slice(-step, None), slice(0, step)
    out[tuple(dst)] = x[tuple(src)]
    return out


def variant(x: np.ndarray, flags: tuple[bool, ...], shift: int) -> np.ndarray:
    """Apply one variant to a batch (n, h, w, c)."""
    flip, up, down, left, right = flags
    if flip:
        x = x[:, :, ::-1]
    if up:
        x = _shift(x, 1, -shift)
    if down:
        x = _shift(x, 1, shift)
    if left:
        x = _shift(x, 2, -shift)
    if right:
        x = _shift(x, 2, shift)
    return x


def augment_batch(x: np.ndarray, shift: int) -> np.ndarray:
    """(n, h, w, c) -> (n * 32, h, w, c): the 32 variants of each image, image-major."""
    if x.ndim != 4:
        raise ValueError(f"expected a batch (n, h, w, c), got shape {x.shape}")
    if not 0 < shift < min(x.shape[1], x.shape[2]):
        raise ValueError(f"shift {shift} must be between 1 and the image side - 1")
    out = np.empty((x.shape[0], N_VARIANTS, *x.shape[1:]), dtype=x.dtype)
    for k, flags in enumerate(VARIANTS):
        out[:, k] = variant(x, flags, shift)
    return out.reshape(-1, *x.shape[1:])


def augment_to_file(
    x: np.ndarray,
    shift: int,
    out_path: Path,
    chunk: int = 512,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Write the variants of ``x`` to an .npy file chunk by chunk (bounded memory)."""
    total = augmented_count(len(x))
    out = np.lib.format.open_memmap(out_path, mode="w+", dtype=x.dtype, shape=(total, *x.shape[1:]))
    for start in range(0, len(x), chunk):
        stop = min(start + chunk, len(x))
        out[start * N_VARIANTS : stop * N_VARIANTS] = augment_batch(np.asarray(x[start:stop]), shift)
        if progress is not None:
            progress(stop, len(x))
    out.flush()
    del out


def augment_labels(y: np.ndarray) -> np.ndarray:
    return np.repeat(np.asarray(y), N_VARIANTS)


def validation_after_augment(y_aug: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) sample indices: ``share`` of the augmented samples, stratified by label.

    The article's protocol (``data.protocol=article``): validation is drawn from the samples
    after augmentation, so variants of one image land on both sides and validation accuracy
    is inflated. Indices are sorted, so reading a memmap by them goes front to back.
    """
    from sklearn.model_selection import train_test_split

    index = np.arange(len(y_aug))
    train, val = train_test_split(index, test_size=share, random_state=seed, stratify=np.asarray(y_aug))
    return np.sort(train), np.sort(val)


def take_to_file(x: np.ndarray, index: np.ndarray, out_path: Path, chunk: int = 8192) -> None:
    """Write ``x[index]`` to an .npy file chunk by chunk (``x`` may be a memmap)."""
    out = np.lib.format.open_memmap(out_path, mode="w+", dtype=x.dtype, shape=(len(index), *x.shape[1:]))
    for start in range(0, len(index), chunk):
        out[start : start + chunk] = x[index[start : start + chunk]]
    out.flush()
    del out
