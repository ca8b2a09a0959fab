"""maskcls.data.cluster: multi-index hashing gives exactly the brute-force clusters."""

from __future__ import annotations

import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

from maskcls.data import Item, _phash, cluster, index_blocks, near_pairs
from maskcls.files import read_regular, scan_tree

SHARED_DATA = Path(__file__).resolve().parents[3].parent / "shared/datasets/face-mask"


def brute_force(h: np.ndarray, m: np.ndarray, threshold: int) -> list[int]:
    """The reference: every pair compared (the rule cluster had before multi-index hashing)."""
    n = len(h)
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a in range(n - 1):
        d = np.minimum(
            np.bitwise_count(h[a] ^ h[a + 1 :]),
            np.minimum(np.bitwise_count(h[a] ^ m[a + 1 :]), np.bitwise_count(m[a] ^ h[a + 1 :])),
        )
        for b in np.nonzero(d <= threshold)[0]:
            ra, rb = find(a), find(a + 1 + int(b))
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    return [find(a) for a in range(n)]


def items_of(h: np.ndarray, m: np.ndarray) -> list[Item]:
    return [
        Item(path=f"{k}.png", label="a", sha256=hashlib.sha256(str(k).encode()).hexdigest(),
             phash=int(x), phash_mirror=int(y), width=20, height=20)
        for k, (x, y) in enumerate(zip(h, m))
    ]


def random_hashes(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 2**63, size=n, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, n, dtype=np.uint64)


def flip_bits(rng: np.random.Generator, x: int, k: int) -> int:
    for bit in rng.choice(64, size=max(0, min(64, k)), replace=False):
        x ^= 1 << int(bit)
    return x


def clustered_hashes(rng: np.random.Generator, n: int, threshold: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes in chains and stars at distances threshold-1, threshold, threshold+1 from each other,
    exact duplicates, mirrors that are another item's hash, and symmetric images (mirror == hash)."""
    h: list[int] = []
    m: list[int] = []
    while len(h) < n:
        x = int(random_hashes(rng, 1)[0])
        for _ in range(int(rng.integers(1, 6))):
            roll = rng.random()
            if roll < 0.15:
                h.append(x)  # an exact duplicate of the previous hash (ties)
                m.append(flip_bits(rng, x, int(rng.integers(0, 64))))
            elif roll < 0.3:
                h.append(flip_bits(rng, x, int(rng.integers(0, 64))))
                m.append(flip_bits(rng, x, threshold + int(rng.integers(-1, 2))))  # mirror near x
            elif roll < 0.4:
                h.append(x)
                m.append(x)  # symmetric image
            else:
                x = flip_bits(rng, x, threshold + int(rng.integers(-1, 2)))
                h.append(x)
                m.append(int(random_hashes(rng, 1)[0]))
    order = rng.permutation(len(h))[:n]
    return np.array(h, dtype=np.uint64)[order], np.array(m, dtype=np.uint64)[order]


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("threshold", [0, 1, 3, 6, 10])
def test_cluster_equals_brute_force_on_random_and_clustered_hashes(seed: int, threshold: int) -> None:
    rng = np.random.default_rng(seed * 100 + threshold)
    for h, m in (
        (random_hashes(rng, 300), random_hashes(rng, 300)),
        clustered_hashes(rng, 300, threshold),
    ):
        assert cluster(items_of(h, m), threshold) == brute_force(h, m, threshold)


@pytest.mark.parametrize("threshold", [0, 2, 5, 6, 9, 20, 63, 64])
def test_every_valid_block_count_finds_the_same_clusters(threshold: int) -> None:
    from maskcls.data import _ball, _block_widths, _components

    rng = np.random.default_rng(threshold)
    h, m = clustered_hashes(rng, 200, threshold)
    expected = brute_force(h, m, threshold)
    tried = 0
    chosen = index_blocks(len(h), threshold)
    for blocks in sorted({1, 2, 3, 4, 5, 7, 8, 16, 32, 64, threshold + 1, chosen} & set(range(1, 65))):
        if max(_ball(w, threshold // blocks) for w in _block_widths(blocks)) > 5000:
            continue  # few long blocks probe too many keys within their radius: correct but slow
        tried += 1
        a, b = near_pairs(h, m, threshold, blocks)
        assert _components(len(h), a, b).tolist() == expected, blocks
    assert tried >= 4


def test_a_block_count_outside_1_to_64_is_refused() -> None:
    h = np.zeros(3, dtype=np.uint64)
    for blocks in (0, 65):
        with pytest.raises(ValueError, match="blocks"):
            near_pairs(h, h, 3, blocks=blocks)


def test_index_blocks_is_exact_match_when_small_and_longer_blocks_when_large() -> None:
    assert index_blocks(4000, 6) == 7  # threshold + 1 blocks, exact block matches
    assert index_blocks(250_000, 6) < 7  # longer blocks with radius 1: fewer candidates
    assert index_blocks(10, 0) == 1


def test_cluster_is_order_independent() -> None:
    rng = np.random.default_rng(5)
    h, m = clustered_hashes(rng, 400, 6)
    base = cluster(items_of(h, m), 6)
    groups = {frozenset(np.nonzero(np.array(base) == g)[0].tolist()) for g in set(base)}
    for _ in range(5):
        perm = rng.permutation(len(h))
        shuffled = cluster(items_of(h[perm], m[perm]), 6)
        back = {frozenset(perm[np.array(shuffled) == g].tolist()) for g in set(shuffled)}
        assert back == groups


def test_cluster_edge_cases() -> None:
    assert cluster([], 6) == []
    one = np.array([5], dtype=np.uint64)
    assert cluster(items_of(one, one), 6) == [0]
    same = np.full(50, 7, dtype=np.uint64)  # 50 ties in every block
    assert cluster(items_of(same, same), 0) == [0] * 50
    far = np.array([0, 2**64 - 1], dtype=np.uint64)
    assert cluster(items_of(far, far[::-1]), 0) == [0, 0]  # each is the other's mirror exactly
    assert cluster(items_of(far, far), 63) == [0, 1] and cluster(items_of(far, far), 64) == [0, 0]


@pytest.mark.timeout(120)
def test_cluster_equals_brute_force_on_the_shared_data() -> None:
    files, _ = scan_tree(SHARED_DATA)
    images = [f for f in files if f.rel.count("/") == 1]
    assert len(images) > 3000

    def hashes(path: Path) -> tuple[int, int]:
        # OpenCV's plain grayscale decode: 4x faster than the pipeline's (EXIF, alpha), and the
        # hashes are real ones either way; both clusterings see the same hashes.
        gray = cv2.imdecode(np.frombuffer(read_regular(path), np.uint8), cv2.IMREAD_GRAYSCALE)
        return _phash(gray), _phash(gray[:, ::-1])

    # OpenCV releases the GIL while decoding, so two threads overlap.
    with ThreadPoolExecutor(max_workers=2) as pool:
        pairs = list(pool.map(hashes, [f.path for f in images]))
    hh, mm = (np.array(col, dtype=np.uint64) for col in zip(*pairs))
    started = time.perf_counter()
    expected = brute_force(hh, mm, 6)
    brute_s = time.perf_counter() - started
    started = time.perf_counter()
    got = cluster(items_of(hh, mm), 6)
    indexed_s = time.perf_counter() - started
    assert got == expected
    assert len(set(got)) < len(got) - 100  # the shared data do hold near-duplicates
    print(f"shared data: {len(got)} hashes, brute force {brute_s:.2f} s, multi-index {indexed_s:.2f} s")
