"""maskcls.files: the one data-folder walker, entry by entry, and the safe read."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from maskcls.files import (
    MAX_LINK_HOPS,
    FileEntry,
    Skip,
    folder_fingerprint,
    is_hidden,
    list_dir,
    read_regular,
    scan_tree,
)


def tree(root: Path) -> Path:
    (root / "cls").mkdir(parents=True)
    (root / "cls" / "a.jpg").write_bytes(b"a-bytes")
    return root


def by_rel(root: Path) -> tuple[dict[str, FileEntry], dict[str, Skip]]:
    files, skipped = scan_tree(root)
    return {f.rel: f for f in files}, {s.rel: s for s in skipped}


def test_regular_file_is_yielded_with_its_stat(tmp_path: Path) -> None:
    files, skipped = by_rel(tree(tmp_path))
    assert skipped == {}
    entry = files["cls/a.jpg"]
    st = os.stat(tmp_path / "cls" / "a.jpg")
    assert entry.path == tmp_path / "cls" / "a.jpg" and entry.size == 7 and entry.mtime_ns == st.st_mtime_ns


def make_fifo(path: Path) -> None:
    os.mkfifo(path)


def make_link_to_fifo(path: Path) -> None:
    os.mkfifo(path.parent / "pipe")  # the pipe itself is skipped too, under its own name
    path.symlink_to("pipe")


def make_socket(path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))  # the socket file stays after close


def make_broken_link(path: Path) -> None:
    path.symlink_to("nothing-here.jpg")


def make_self_link(path: Path) -> None:
    path.symlink_to(path.name)


def make_device_link(path: Path) -> None:
    path.symlink_to("/dev/zero")  # a device, and outside the folder: refused before its kind matters


#: Entry kind -> how to make it, the skip kind, a phrase of the reason.
ODD_ENTRIES = {
    "fifo": (make_fifo, "fifo", "a named pipe (FIFO), not a regular file"),
    "link to a fifo": (make_link_to_fifo, "fifo", "a symbolic link to a named pipe"),
    "socket": (make_socket, "socket", "a socket, not a regular file"),
    "broken link": (make_broken_link, "broken-link", "broken symbolic link"),
    "self link": (make_self_link, "loop", "symbolic link loop"),
    "device link": (make_device_link, "outside", "outside the folder"),
}


@pytest.mark.timeout(10)
@pytest.mark.parametrize("name", ODD_ENTRIES)
def test_an_odd_entry_named_like_an_image_is_skipped_with_its_reason(tmp_path: Path, name: str) -> None:
    tree(tmp_path)
    make, kind, reason = ODD_ENTRIES[name]
    make(tmp_path / "cls" / "x.jpg")
    files, skipped = by_rel(tmp_path)
    assert set(files) == {"cls/a.jpg"}
    assert skipped["cls/x.jpg"].kind == kind and reason in skipped["cls/x.jpg"].reason


@pytest.mark.timeout(10)
def test_read_regular_refuses_a_fifo_at_once(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "x.jpg")
    with pytest.raises(OSError, match="named pipe"):
        read_regular(tmp_path / "x.jpg")
    (tmp_path / "ok.jpg").write_bytes(b"ok")
    assert read_regular(tmp_path / "ok.jpg") == b"ok"


def test_symlink_inside_is_a_file(tmp_path: Path) -> None:
    tree(tmp_path)
    (tmp_path / "cls" / "b.jpg").symlink_to("a.jpg")
    files, skipped = by_rel(tmp_path)
    assert skipped == {} and files["cls/b.jpg"].size == 7
    assert files["cls/b.jpg"].path == tmp_path / "cls" / "b.jpg"


def test_symlink_chain_inside_is_followed_up_to_the_bound(tmp_path: Path) -> None:
    tree(tmp_path)
    previous = "a.jpg"
    for k in range(MAX_LINK_HOPS):
        (tmp_path / "cls" / f"l{k}").symlink_to(previous)
        previous = f"l{k}"
    files, skipped = by_rel(tmp_path)
    assert f"cls/l{MAX_LINK_HOPS - 1}" in files  # exactly MAX_LINK_HOPS links
    (tmp_path / "cls" / "too-long").symlink_to(previous)
    files, skipped = by_rel(tmp_path)
    assert "cls/too-long" not in files and skipped["cls/too-long"].kind == "long-chain"


def test_symlink_outside_is_skipped(tmp_path: Path) -> None:
    root = tree(tmp_path / "root")
    (tmp_path / "secret.jpg").write_bytes(b"secret")
    (root / "cls" / "s.jpg").symlink_to(tmp_path / "secret.jpg")
    (root / "cls" / "rel.jpg").symlink_to("../../secret.jpg")
    files, skipped = by_rel(root)
    assert set(files) == {"cls/a.jpg"}
    assert skipped["cls/s.jpg"].kind == skipped["cls/rel.jpg"].kind == "outside"
    assert "outside the folder" in skipped["cls/s.jpg"].reason


def test_symlink_through_a_linked_folder_outside_is_skipped(tmp_path: Path) -> None:
    # The link's own path looks inside, but its folder is a link that leaves the root.
    root = tree(tmp_path / "root")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "f.jpg").write_bytes(b"f")
    (root / "door").symlink_to(tmp_path / "out", target_is_directory=True)
    (root / "cls" / "via.jpg").symlink_to("../door/f.jpg")
    _, skipped = by_rel(root)
    assert skipped["cls/via.jpg"].kind == "outside"
    assert skipped["door"].kind == "outside"


@pytest.mark.timeout(10)
def test_symlink_loop_is_skipped(tmp_path: Path) -> None:
    tree(tmp_path)
    (tmp_path / "cls" / "x.jpg").symlink_to("y.jpg")
    (tmp_path / "cls" / "y.jpg").symlink_to("x.jpg")
    (tmp_path / "loops").symlink_to("loops/deeper")  # a loop through a folder component
    (tmp_path / "cls" / "z.jpg").symlink_to("../loops/z.jpg")
    files, skipped = by_rel(tmp_path)
    assert set(files) == {"cls/a.jpg"}
    assert {skipped[k].kind for k in ("cls/x.jpg", "cls/y.jpg", "cls/z.jpg", "loops")} == {"loop"}


def test_hidden_files_and_folders_are_skipped_by_one_rule(tmp_path: Path) -> None:
    tree(tmp_path)
    (tmp_path / "cls" / ".DS_Store").write_bytes(b"\0")
    (tmp_path / "__MACOSX" / "cls").mkdir(parents=True)
    (tmp_path / "__MACOSX" / "cls" / "._a.jpg").write_bytes(b"junk")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "y.jpg").write_bytes(b"y")
    files, skipped = by_rel(tmp_path)
    assert set(files) == {"cls/a.jpg"}
    assert {k: s.kind for k, s in skipped.items()} == {
        "cls/.DS_Store": "hidden", "__MACOSX/cls/._a.jpg": "hidden", ".cache/y.jpg": "hidden",
    }
    assert is_hidden("a/.b/c") and is_hidden("__MACOSX/x") and not is_hidden("a/b.c")


@pytest.mark.timeout(10)
def test_directory_symlink_is_skipped_not_followed(tmp_path: Path) -> None:
    tree(tmp_path)
    (tmp_path / "again").symlink_to(tmp_path / "cls", target_is_directory=True)
    (tmp_path / "cls" / "up").symlink_to("..", target_is_directory=True)  # would loop if followed
    files, skipped = by_rel(tmp_path)
    assert set(files) == {"cls/a.jpg"}
    assert skipped["again"].kind == skipped["cls/up"].kind == "dir-link"


def test_read_regular_refuses_a_device() -> None:
    with pytest.raises(OSError, match="character device"):
        read_regular("/dev/zero")


def test_list_dir_gives_real_subfolders_only(tmp_path: Path) -> None:
    tree(tmp_path)
    (tmp_path / "other").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "other", target_is_directory=True)
    (tmp_path / "top.jpg").write_bytes(b"t")
    listing = list_dir(tmp_path, tmp_path)
    assert listing.dirs == [tmp_path / "cls", tmp_path / "other"]
    assert [f.rel for f in listing.files] == ["top.jpg"]
    assert [(s.rel, s.kind) for s in listing.skipped] == [("link", "dir-link")]


def test_walk_order_is_stable_and_sorted_per_folder(tmp_path: Path) -> None:
    for rel in ("b/2.jpg", "b/1.jpg", "a/z.jpg", "a/c/x.jpg", "top.jpg"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(rel.encode())
    files, _ = scan_tree(tmp_path)
    assert [f.rel for f in files] == ["top.jpg", "a/z.jpg", "a/c/x.jpg", "b/1.jpg", "b/2.jpg"]


def test_folder_fingerprint_follows_content_stat_and_skips(tmp_path: Path) -> None:
    tree(tmp_path)
    first = folder_fingerprint(tmp_path)
    assert folder_fingerprint(tmp_path) == first
    os.utime(tmp_path / "cls" / "a.jpg", ns=(1, 1))
    touched = folder_fingerprint(tmp_path)
    assert touched != first
    os.mkfifo(tmp_path / "cls" / "x.jpg")
    assert folder_fingerprint(tmp_path) not in (first, touched)


@pytest.mark.timeout(30)
def test_validate_skips_a_fifo_named_like_an_image_and_returns(tmp_path: Path) -> None:
    import cv2
    import numpy as np

    from maskcls.config import DataConfig
    from maskcls.data import validate

    rng = np.random.default_rng(0)
    for cls in ("with_mask", "without_mask"):
        (tmp_path / cls).mkdir()
        for k in range(3):
            base = rng.integers(0, 256, size=(8, 8, 3)).astype(np.uint8)
            cv2.imwrite(str(tmp_path / cls / f"{k}.png"), cv2.resize(base, (40, 40)))
    os.mkfifo(tmp_path / "with_mask" / "x.jpg")
    (tmp_path / "without_mask" / "out.jpg").symlink_to("/etc/hostname")
    manifest = validate(tmp_path, DataConfig(min_per_class=2))
    assert manifest.counts == {"with_mask": 3, "without_mask": 3}
    reasons = {s.path: s.reason for s in manifest.skipped}
    assert reasons["with_mask/x.jpg"] == "a named pipe (FIFO), not a regular file"
    assert "outside the folder" in reasons["without_mask/out.jpg"]
    assert {"path": "with_mask/x.jpg", "reason": reasons["with_mask/x.jpg"]} in manifest.report()["skipped"]
