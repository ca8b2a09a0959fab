"""Walk a data folder safely: regular files only, links kept inside the folder, each skip explained.

Every place that looks into a source, a class folder or an inbox goes through ``walk``
(or ``list_dir`` for one level), so none of them can ``open()`` a named pipe and wait
forever, read a device, or follow a link out of the folder. Each entry is checked with
``os.lstat`` before anything else; a symbolic link is followed (at most
``MAX_LINK_HOPS`` links in a chain) only when its target is a regular file inside the
root. Everything else comes back as a ``Skip`` with its kind and a reason a person can
read. ``read_regular`` opens without blocking and re-checks the opened file, so a file
swapped for a pipe after the walk cannot block either.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Literal

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"})
#: Longest chain of symbolic links followed to reach a file (the kernel allows 40).
MAX_LINK_HOPS = 8
_CHUNK = 1 << 20

SkipKind = Literal[
    "hidden", "fifo", "socket", "device", "broken-link", "outside", "loop", "long-chain", "dir-link", "unreadable",
    "other",
]


def is_hidden_name(name: str) -> bool:
    """The one hidden-file rule: dot files and macOS's ``__MACOSX`` resource folders."""
    return name.startswith(".") or name == "__MACOSX"


def is_hidden(rel: str | PurePosixPath) -> bool:
    """True when any component of a relative path is hidden."""
    return any(is_hidden_name(part) for part in PurePosixPath(rel).parts)


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


@dataclass(frozen=True)
class FileEntry:
    """A regular file below the root (or a link to one inside it), with its target's size and mtime."""

    rel: str  # relative to the root, POSIX separators
    path: Path  # root / rel, as walked (a link stays a link)
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Skip:
    """An entry that is not read, and why."""

    rel: str
    kind: SkipKind
    reason: str


@dataclass(frozen=True)
class Listing:
    """One folder level: real sub-folders, regular files, and the entries left out."""

    dirs: list[Path]
    files: list[FileEntry]
    skipped: list[Skip]


_SPECIAL: dict[int, tuple[SkipKind, str]] = {
    stat.S_IFIFO: ("fifo", "a named pipe (FIFO)"),
    stat.S_IFSOCK: ("socket", "a socket"),
    stat.S_IFCHR: ("device", "a character device"),
    stat.S_IFBLK: ("device", "a block device"),
}


def _special(mode: int) -> tuple[SkipKind, str]:
    return _SPECIAL.get(stat.S_IFMT(mode), ("other", "not a regular file"))


def _inside(real: str, root_real: str) -> bool:
    return real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)


def _follow(link: str, rel: str, root_real: str) -> os.stat_result | Skip:
    """The stat of the file ``link`` leads to, or a ``Skip`` when it must not be followed."""
    seen: set[str] = set()
    current = link
    for _ in range(MAX_LINK_HOPS):
        try:
            target = os.readlink(current)
        except OSError as exc:
            return Skip(rel, "unreadable", f"cannot read the symbolic link: {exc.strerror or exc}")
        joined = os.path.join(os.path.dirname(current), target)
        # Canonical name of the next hop: its folder resolved (folders may be links), its own name kept.
        current = os.path.join(os.path.realpath(os.path.dirname(joined)), os.path.basename(joined))
        if current in seen:
            return Skip(rel, "loop", "a symbolic link loop")
        seen.add(current)
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            return Skip(rel, "broken-link", f"a broken symbolic link (its target {target} does not exist)")
        except OSError as exc:
            kind: SkipKind = "loop" if exc.errno == errno.ELOOP else "unreadable"
            return Skip(rel, kind, f"cannot follow the symbolic link: {exc.strerror or exc}")
        if not stat.S_ISLNK(st.st_mode):
            break
    else:
        return Skip(rel, "long-chain", f"a chain of more than {MAX_LINK_HOPS} symbolic links")
    if not _inside(current, root_real):
        return Skip(rel, "outside", f"a symbolic link to {current}, outside the folder")
    return st


def list_dir(folder: Path, root: Path, *, include_hidden: bool = False, root_real: str | None = None) -> Listing:
    """Classify the entries of ``folder`` (below ``root``) by ``lstat``, without opening any of them.

    Real sub-folders are listed for descent; a link to a folder is skipped, not followed,
    so no folder is walked twice and no walk can loop. Hidden regular files are skipped
    unless ``include_hidden`` (a pin or the store lists every file).
    """
    root_real = root_real or os.path.realpath(root)
    dirs: list[Path] = []
    files: list[FileEntry] = []
    skipped: list[Skip] = []
    try:
        names = sorted(os.listdir(folder))
    except OSError as exc:
        rel = Path(folder).relative_to(root).as_posix()
        return Listing([], [], [Skip(rel, "unreadable", f"cannot list the folder: {exc.strerror or exc}")])
    for name in names:
        path = Path(folder, name)
        rel = path.relative_to(root).as_posix()
        try:
            st = os.lstat(path)
        except OSError as exc:
            skipped.append(Skip(rel, "unreadable", f"cannot read the entry: {exc.strerror or exc}"))
            continue
        if stat.S_ISDIR(st.st_mode):
            dirs.append(path)
            continue
        link = ""
        if stat.S_ISLNK(st.st_mode):
            followed = _follow(str(path), rel, root_real)
            if isinstance(followed, Skip):
                skipped.append(followed)
                continue
            st = followed
            link = "a symbolic link to "
            if stat.S_ISDIR(st.st_mode):
                skipped.append(Skip(rel, "dir-link", "a symbolic link to a folder (folders behind links are "
                                    "not followed)"))
                continue
        if not stat.S_ISREG(st.st_mode):
            kind, what = _special(st.st_mode)
            skipped.append(Skip(rel, kind, f"{link}{what}, not a regular file"))
        elif not include_hidden and is_hidden(rel):
            skipped.append(Skip(rel, "hidden", "hidden file"))
        else:
            files.append(FileEntry(rel, path, st.st_size, st.st_mtime_ns))
    return Listing(dirs, files, skipped)


def walk(root: Path | str, *, include_hidden: bool = False) -> Iterator[FileEntry | Skip]:
    """Every entry below ``root``: a ``FileEntry`` for each regular file, a ``Skip`` for anything else.

    Folder by folder (depth first, names sorted), so the order is stable.

    Hidden folders are walked too, so what they hold is reported (as hidden) rather than
    silently ignored.
    """
    root = Path(root)
    root_real = os.path.realpath(root)
    stack = [root]
    while stack:
        listing = list_dir(stack.pop(), root, include_hidden=include_hidden, root_real=root_real)
        # Files and skips of this folder, then its sub-folders depth first, in name order.
        yield from sorted([*listing.files, *listing.skipped], key=lambda e: e.rel)
        stack.extend(reversed(listing.dirs))


def scan_tree(root: Path | str, *, include_hidden: bool = False) -> tuple[list[FileEntry], list[Skip]]:
    """``walk`` collected: the regular files and the skipped entries."""
    files: list[FileEntry] = []
    skipped: list[Skip] = []
    for entry in walk(root, include_hidden=include_hidden):
        (files if isinstance(entry, FileEntry) else skipped).append(entry)
    return files, skipped


@contextmanager
def open_regular(path: Path | str) -> Iterator[BinaryIO]:
    """Open a regular file for reading; never blocks on a pipe or device put in its place.

    O_NONBLOCK makes opening a FIFO return at once; the opened file is then checked with
    ``fstat`` and refused (``OSError``) unless it is a regular file.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            _, what = _special(st.st_mode)
            raise OSError(errno.EINVAL, f"{what}, not a regular file", str(path))
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as fh:
        yield fh


def image_files(folder: Path | str) -> list[Path]:
    """The regular, visible image files below ``folder``, in path order (what ``predict`` labels)."""
    found = [e for e in walk(folder) if isinstance(e, FileEntry) and is_image_name(e.path.name)]
    return [e.path for e in sorted(found, key=lambda e: e.rel.split("/"))]


def read_regular(path: Path | str) -> bytes:
    """The bytes of a regular file (``open_regular``)."""
    with open_regular(path) as fh:
        return fh.read()


def sha256_file(path: Path | str) -> str:
    """Hex sha256 of a regular file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open_regular(path) as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def folder_fingerprint(root: Path | str) -> str:
    """sha256 over the sorted (relative path, size, mtime_ns) of every regular file, and every skip's kind."""
    rows: list[bytes] = []
    for entry in walk(root):
        rel = os.fsencode(entry.rel)
        if isinstance(entry, FileEntry):
            rows.append(b"%s\0%d\0%d\n" % (rel, entry.size, entry.mtime_ns))
        else:
            rows.append(b"%s\0skip\0%s\n" % (rel, entry.kind.encode()))
    digest = hashlib.sha256()
    for row in sorted(rows):
        digest.update(row)
    return digest.hexdigest()


# --------------------------------------------------------------------------- folder layout


def visible_subdirs(folder: Path, root: Path | None = None) -> list[Path]:
    """The real, non-hidden sub-folders of ``folder`` (links to folders are not followed)."""
    return [d for d in list_dir(folder, root or folder).dirs if not is_hidden_name(d.name)]


def _holds_images(folder: Path, root: Path) -> bool:
    return any(is_image_name(f.path.name) for f in list_dir(folder, root).files)


def is_class_root(folder: Path, root: Path | None = None) -> bool:
    """True when at least two visible sub-folders of ``folder`` directly hold image files."""
    root = root or folder
    return sum(1 for d in visible_subdirs(folder, root) if _holds_images(d, root)) >= 2


def is_split_root(folder: Path, root: Path | None = None) -> bool:
    """The train/test layout: ``train/`` and ``test/`` (any case) that each hold class folders."""
    root = root or folder
    named = {d.name.lower(): d for d in visible_subdirs(folder, root)}
    return all(side in named and is_class_root(named[side], root) for side in ("train", "test"))
