"""Bad inputs made on purpose: broken image files, hostile zips, odd folders.

Every maker writes real bytes (real photos from the shared data, re-encoded or damaged),
so each case is what a user could actually hand the pipeline.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

import cv2
import numpy as np

from tests.support.data import CLASSES, shared_files
from tests.support.zips import flag_encrypted, zip_of


def photo(cls: str = "with_mask", index: int = 0) -> np.ndarray:
    """A decoded real photo (BGR) from the shared data, outside the usual subsets."""
    files = shared_files(cls)
    img = cv2.imread(str(files[-1 - index]), cv2.IMREAD_COLOR)
    assert img is not None
    return img


def encode(img: np.ndarray, ext: str, params: list[int] | None = None) -> bytes:
    ok, buf = cv2.imencode(ext, img, params or [])
    assert ok, ext
    return buf.tobytes()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height but holds no pixel data (a decompression-bomb header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def cmyk_jpeg(img: np.ndarray) -> bytes:
    from PIL import Image

    rgb = Image.fromarray(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    buf = io.BytesIO()
    rgb.convert("CMYK").save(buf, "JPEG", quality=90)
    return buf.getvalue()


def palette_png(img: np.ndarray) -> bytes:
    from PIL import Image

    rgb = Image.fromarray(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    buf = io.BytesIO()
    rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(buf, "PNG")
    return buf.getvalue()


def gif(img: np.ndarray) -> bytes:
    from PIL import Image

    rgb = Image.fromarray(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    buf = io.BytesIO()
    rgb.save(buf, "GIF")
    return buf.getvalue()


# path (relative to the dataset root) -> (bytes, expected: "kept" | "skipped" | "decodable", reason words)
def broken_files() -> dict[str, tuple[bytes, str, str]]:
    """The file-by-file bad inputs of issue 4, part 1, with what validation must do with each."""
    a, b, c, d, e = (photo("with_mask", i) for i in range(5))
    f, g, h, i_, j = (photo("without_mask", i) for i in range(5))
    good_jpeg = encode(a, ".jpg")
    rgba = np.dstack([g, np.full(g.shape[:2], 200, np.uint8)])
    return {
        # damaged or not images at all: skipped, with why
        "with_mask/truncated.jpg": (good_jpeg[: len(good_jpeg) // 3], "skipped", "truncated JPEG"),
        "with_mask/zero-bytes.jpg": (b"", "skipped", "empty"),
        "without_mask/page.jpg": (b"<!DOCTYPE html><html><body>404 Not Found</body></html>\n", "skipped",
                                  "HTML page"),
        "without_mask/notes.jpg": (b"just some text, saved with the wrong extension\n", "skipped", "text, not an image"),
        "with_mask/readme.txt": (b"not an image\n", "skipped", "unsupported file type"),
        "without_mask/drawing.svg": (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "skipped",
                                     "unsupported file type"),
        "with_mask/tiny.png": (encode(cv2.resize(b, (8, 8)), ".png"), "skipped", "minimum side"),
        "without_mask/bomb.png": (png_header_only(9000, 8000), "skipped", "exceeds the limit"),
        # unusual but valid encodings: decoded and kept
        "with_mask/sixteen-bit.png": (encode((c.astype(np.uint16) * 257), ".png"), "kept", ""),
        "without_mask/palette.png": (palette_png(h), "kept", ""),
        "without_mask/rgba.png": (encode(rgba, ".png"), "kept", ""),
        "with_mask/cmyk.jpg": (cmyk_jpeg(d), "kept", ""),
        # decoded if this OpenCV can, else skipped with a reason
        "with_mask/photo.webp": (encode(e, ".webp"), "decodable", ""),
        "without_mask/animation.gif": (gif(i_), "decodable", ""),
        # names
        "with_mask/masqué ñ 日本 photo.jpg": (encode(cv2.flip(b, 0), ".jpg"), "kept", ""),
        "without_mask/my photo (1).jpg": (encode(j, ".jpg"), "kept", ""),
        # misplaced and hidden
        "stray.jpg": (encode(f, ".jpg"), "skipped", "outside any class folder"),
        "with_mask/extra/nested.jpg": (encode(cv2.flip(c, 1), ".jpg"), "skipped", "nested below a class folder"),
        "with_mask/.hidden.jpg": (encode(cv2.flip(e, 1), ".jpg"), "skipped", "hidden"),
        ".DS_Store": (b"\0\0\0\1Bud1", "skipped", "hidden"),
    }


# --------------------------------------------------------------------------- zips (tests/support/zips.py makes them)


def small_entries() -> dict[str, bytes]:
    return {f"dataset/{cls}/{k}.png": encode(photo(cls, k), ".png") for cls in CLASSES for k in range(2)}


def encrypted_zip() -> bytes:
    """A stored zip with the 'encrypted' flag set on its entry (local and central headers)."""
    return flag_encrypted(zip_of({"dataset/with_mask/a.png": encode(photo(), ".png")}, zipfile.ZIP_STORED))


def empty_zip() -> bytes:
    return zip_of({})


def corrupt_zip() -> bytes:
    whole = zip_of(small_entries())
    return whole[: len(whole) // 2]


def slip_zip() -> bytes:
    entries = small_entries()
    entries["dataset/../../escaped.png"] = encode(photo(), ".png")
    return zip_of(entries)


def symlink_zip() -> bytes:
    return zip_of(small_entries(), links={"dataset/with_mask/passwd.png": "/etc/passwd"})


def oversize_zip() -> bytes:
    """Two small entries whose central headers declare ~4.3 GB each (more than the 4 GiB limit together)."""
    body = bytearray(zip_of({"dataset/with_mask/a.bin": b"x" * 10, "dataset/without_mask/b.bin": b"y" * 10},
                            zipfile.ZIP_STORED))
    pos = 0
    while (pos := body.find(b"PK\x01\x02", pos)) != -1:
        body[pos + 24:pos + 28] = struct.pack("<I", 0xFFFFFFF0)  # uncompressed size
        pos += 4
    return bytes(body)
