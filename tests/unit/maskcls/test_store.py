"""maskcls.store: content-addressed, atomically written, verified on read."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest

from maskcls.store import (
    FileRef,
    Store,
    StoreError,
    atomic_write_bytes,
    load_array,
    sha256_file,
)


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


@pytest.fixture()
def arr() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(7, 5, 5, 1), dtype=np.uint8)


def test_put_array_round_trip(tmp_path: Path, arr: np.ndarray) -> None:
    store = Store(tmp_path / "store")
    ref = store.put_array("arrays", arr)
    for mmap in (True, False):
        back = load_array(ref, mmap=mmap)
        assert back.dtype == arr.dtype and back.shape == arr.shape
        np.testing.assert_array_equal(back, arr)
    assert isinstance(load_array(ref), np.memmap)
    assert not isinstance(load_array(ref, mmap=False), np.memmap)


def test_content_address_is_the_sha256_of_the_bytes(tmp_path: Path, arr: np.ndarray) -> None:
    store = Store(tmp_path)
    ref = store.put_array("arrays", arr)
    path = Path(ref.path)
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    assert ref.sha256 == digest
    assert path.name == f"{digest}.npy"
    assert path.parent == tmp_path / "arrays"
    assert ref.size == len(data)
    # The stored bytes are exactly what numpy writes for this array.
    assert data == npy_bytes(arr)


def test_identical_content_gets_the_same_path_and_different_content_another(tmp_path: Path, arr: np.ndarray) -> None:
    store = Store(tmp_path)
    a = store.put_array("arrays", arr)
    b = store.put_array("arrays", arr.copy())
    assert a == b
    assert len(files_under(tmp_path)) == 1
    changed = arr.copy()
    changed[0, 0, 0, 0] ^= 1
    c = store.put_array("arrays", changed)
    assert c.path != a.path and c.sha256 != a.sha256
    assert len(files_under(tmp_path)) == 2


def test_put_bytes_and_put_file(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    ref = store.put_bytes("models", ".keras", b"model bytes")
    assert Path(ref.path).read_bytes() == b"model bytes"
    assert Path(ref.path).name == hashlib.sha256(b"model bytes").hexdigest() + ".keras"
    src = tmp_path / "report.json"
    src.write_bytes(b'{"a": 1}')
    ref2 = store.put_file("reports", src)
    assert Path(ref2.path).suffix == ".json"
    assert ref2.sha256 == hashlib.sha256(b'{"a": 1}').hexdigest()
    assert ref2.verify()


def test_sha_helpers_agree_with_hashlib(tmp_path: Path) -> None:
    data = bytes(range(256)) * 5000  # more than one read chunk
    p = tmp_path / "f.bin"
    p.write_bytes(data)
    assert sha256_file(p) == hashlib.sha256(data).hexdigest()


def test_verify_is_false_after_altering_one_byte(tmp_path: Path, arr: np.ndarray) -> None:
    ref = Store(tmp_path).put_array("arrays", arr)
    assert ref.verify()
    path = Path(ref.path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # same size, different content
    path.write_bytes(bytes(data))
    assert not ref.verify()
    with pytest.raises(StoreError) as exc:
        load_array(ref)
    assert ref.path in str(exc.value)


def test_verify_is_false_after_truncating_or_deleting(tmp_path: Path, arr: np.ndarray) -> None:
    store = Store(tmp_path)
    ref = store.put_array("arrays", arr)
    path = Path(ref.path)
    path.write_bytes(path.read_bytes()[:-1])
    assert not ref.verify()
    path.unlink()
    assert not ref.verify()
    with pytest.raises(StoreError) as exc:
        load_array(ref)
    assert ref.path in str(exc.value)
    assert "missing" in str(exc.value)


def test_a_ref_to_a_path_that_never_existed(tmp_path: Path) -> None:
    ref = FileRef(path=str(tmp_path / "nope.npy"), sha256="0" * 64, size=1)
    assert not ref.verify()
    with pytest.raises(StoreError, match="nope.npy"):
        ref.check()


def test_check_returns_the_path_of_a_good_file(tmp_path: Path, arr: np.ndarray) -> None:
    ref = Store(tmp_path).put_array("arrays", arr)
    assert ref.check() == Path(ref.path)


def test_no_temp_files_remain_after_a_writer_raises(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.put_bytes("arrays", ".npy", b"keep me")
    before = files_under(tmp_path)

    def failing_writer(p: Path) -> None:
        p.write_bytes(b"half written")
        raise RuntimeError("writer died")

    with pytest.raises(RuntimeError, match="writer died"):
        store.put("arrays", ".npy", failing_writer)
    assert files_under(tmp_path) == before

    def interrupted_writer(p: Path) -> None:
        p.write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.put("other", ".bin", interrupted_writer)
    assert files_under(tmp_path) == before


def test_atomic_write_bytes_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "file.txt"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert files_under(tmp_path) == [target]


def test_atomic_write_bytes_failure_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "file.txt"
    atomic_write_bytes(target, b"old")
    with pytest.raises(TypeError):
        atomic_write_bytes(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert files_under(tmp_path) == [target]

