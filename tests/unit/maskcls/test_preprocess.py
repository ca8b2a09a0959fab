"""maskcls.preprocess: decode (PNG/JPEG/RGBA/16-bit/gray), model input shapes, file batches."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from maskcls.config import PreprocessConfig
from maskcls.preprocess import (
    DecodeError,
    decode_image,
    preprocess_bytes,
    preprocess_files,
    to_gray,
    to_model_input,
)


def encode(img: np.ndarray, ext: str = ".png") -> bytes:
    ok, buf = cv2.imencode(ext, img)
    assert ok
    return buf.tobytes()


def random_bgr(seed: int = 0, h: int = 24, w: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


# --- decode_image -----------------------------------------------------------------------------


def test_decode_png_color_is_lossless_bgr() -> None:
    img = random_bgr(1)
    out = decode_image(encode(img))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, img)


def test_decode_jpeg_is_close_to_the_original() -> None:
    img = np.zeros((32, 32, 3), np.uint8)
    img[:] = (30, 120, 220)  # flat BGR colour: JPEG keeps it nearly exactly
    out = decode_image(encode(img, ".jpg"))
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - img.astype(int)).max() <= 3


def test_decode_gray_png_is_two_dimensional() -> None:
    gray = np.random.default_rng(2).integers(0, 256, size=(20, 30), dtype=np.uint8)
    out = decode_image(encode(gray))
    assert out.shape == (20, 30)
    np.testing.assert_array_equal(out, gray)


def test_decode_rgba_composites_on_white() -> None:
    bgra = np.zeros((10, 10, 4), np.uint8)
    bgra[..., :3] = (10, 20, 30)
    bgra[:5, :, 3] = 255  # top half opaque
    bgra[5:, :, 3] = 0  # bottom half fully transparent
    out = decode_image(encode(bgra))
    assert out.shape == (10, 10, 3)
    np.testing.assert_array_equal(out[:5], np.broadcast_to(np.array([10, 20, 30], np.uint8), (5, 10, 3)))
    np.testing.assert_array_equal(out[5:], np.full((5, 10, 3), 255, np.uint8))


def test_decode_half_transparent_pixel_is_halfway_to_white() -> None:
    bgra = np.zeros((4, 4, 4), np.uint8)
    bgra[..., 3] = 128  # black at ~50% opacity
    out = decode_image(encode(bgra))
    expected = 255 * (1 - 128 / 255)
    assert np.all(np.abs(out.astype(float) - expected) <= 1)


def test_decode_16_bit_png_scales_to_8_bits() -> None:
    rng = np.random.default_rng(3)
    deep = rng.integers(0, 65536, size=(12, 16, 3), dtype=np.uint16)
    out = decode_image(encode(deep))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, (deep // 256).astype(np.uint8))


def test_decode_16_bit_gray_png() -> None:
    deep = np.array([[0, 255, 256, 65535]] * 4, dtype=np.uint16)
    out = decode_image(encode(deep))
    assert out.shape == (4, 4) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0], [0, 0, 1, 255])


@pytest.mark.parametrize(
    "data, pattern",
    [
        (b"", "empty"),
        (b"plain text, not pixels", "decode"),
        (b"<html><body>Not found</body></html>", "decode"),
    ],
)
def test_decode_rejects_non_images(data: bytes, pattern: str) -> None:
    with pytest.raises(DecodeError, match=pattern):
        decode_image(data)


def test_decode_rejects_a_truncated_png() -> None:
    data = encode(random_bgr(4))
    with pytest.raises(DecodeError):
        decode_image(data[: len(data) // 2])


def test_decode_error_is_a_value_error() -> None:
    assert issubclass(DecodeError, ValueError)


def test_decode_applies_the_exif_orientation() -> None:
    import io

    from PIL import Image, ImageOps

    stored = np.zeros((20, 40, 3), np.uint8)  # landscape as stored, bright band on the left
    stored[:, :10] = 255
    im = Image.fromarray(stored)
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif.tobytes(), quality=95)
    data = buf.getvalue()
    upright = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
    assert upright.shape == (40, 20, 3)  # the reference really is rotated
    out = decode_image(data)
    assert out.shape[:2] == (40, 20)
    # The bright band is at the top once displayed upright.
    assert out[:10].mean() > 200 and out[12:].mean() < 50


# --- to_model_input ---------------------------------------------------------------------------


def test_to_model_input_grayscale_shape_dtype_and_values() -> None:
    img = random_bgr(5, h=40, w=60)
    cfg = PreprocessConfig(size=20, color_mode="grayscale")
    out = to_model_input(img, cfg)
    assert out.shape == (20, 20, 1)
    assert out.dtype == np.uint8
    assert out.flags["C_CONTIGUOUS"]
    # Independent reference: luma weights (BT.601), then an area-average resize.
    b, g, r = (img[..., k].astype(np.float64) for k in range(3))
    luma = 0.299 * r + 0.587 * g + 0.114 * b
    ref = cv2.resize(luma, (20, 20), interpolation=cv2.INTER_AREA)
    assert np.abs(out[..., 0].astype(float) - ref).max() <= 2


def test_to_model_input_rgb_reorders_channels() -> None:
    bgr = np.zeros((16, 16, 3), np.uint8)
    bgr[..., 0] = 200  # pure blue in OpenCV's BGR order
    cfg = PreprocessConfig(size=8, color_mode="rgb")
    out = to_model_input(bgr, cfg)
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 2], np.full((8, 8), 200, np.uint8))
    np.testing.assert_array_equal(out[..., :2], np.zeros((8, 8, 2), np.uint8))


def test_to_model_input_rgb_from_gray_repeats_the_channel() -> None:
    gray = np.random.default_rng(6).integers(0, 256, size=(16, 16), dtype=np.uint8)
    out = to_model_input(gray, PreprocessConfig(size=16, color_mode="rgb"))
    assert out.shape == (16, 16, 3)
    for k in range(3):
        np.testing.assert_array_equal(out[..., k], gray)


def test_to_model_input_gray_from_gray_at_same_size_is_identity() -> None:
    gray = np.random.default_rng(7).integers(0, 256, size=(16, 16), dtype=np.uint8)
    out = to_model_input(gray, PreprocessConfig(size=16))
    np.testing.assert_array_equal(out[..., 0], gray)


def test_to_model_input_area_resize_averages_blocks() -> None:
    # Each pixel blown up to a 4x4 block shrinks back to exactly that pixel (an average of equals).
    img = np.random.default_rng(9).integers(0, 256, size=(8, 8), dtype=np.uint8)
    small = to_model_input(np.kron(img, np.ones((4, 4), np.uint8)), PreprocessConfig(size=8))
    assert small.shape == (8, 8, 1)
    np.testing.assert_array_equal(small[..., 0], img)


@pytest.mark.parametrize("mode, channels", [("grayscale", 1), ("rgb", 3)])
def test_preprocess_bytes_matches_decode_then_model_input(mode: str, channels: int) -> None:
    img = random_bgr(8, h=30, w=30)
    cfg = PreprocessConfig(size=10, color_mode=mode)
    out = preprocess_bytes(encode(img), cfg)
    assert out.shape == (10, 10, channels) == (cfg.size, cfg.size, cfg.channels)
    np.testing.assert_array_equal(out, to_model_input(img, cfg))


def test_to_gray_leaves_gray_alone() -> None:
    gray = np.arange(16, dtype=np.uint8).reshape(4, 4)
    assert to_gray(gray) is gray


# --- preprocess_files -------------------------------------------------------------------------


def test_preprocess_files_stacks_images_in_order(tmp_path: Path) -> None:
    cfg = PreprocessConfig(size=12)
    imgs = [random_bgr(10 + k, h=24 + k, w=20) for k in range(5)]
    paths = []
    for k, img in enumerate(imgs):
        rel = f"cls/{k}.png"
        (tmp_path / "cls").mkdir(exist_ok=True)
        (tmp_path / rel).write_bytes(encode(img))
        paths.append(rel)
    out = preprocess_files(tmp_path, paths[::-1], cfg)
    assert out.shape == (5, 12, 12, 1) and out.dtype == np.uint8
    for k, img in enumerate(imgs[::-1]):
        np.testing.assert_array_equal(out[k], to_model_input(img, cfg))


def test_preprocess_files_names_the_broken_file(tmp_path: Path) -> None:
    (tmp_path / "ok.png").write_bytes(encode(random_bgr(20)))
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DecodeError) as exc:
        preprocess_files(tmp_path, ["ok.png", "broken.jpg"], PreprocessConfig(size=8))
    assert "broken.jpg" in str(exc.value)
    assert "ok.png" not in str(exc.value)


def test_preprocess_files_is_the_same_on_one_thread_and_on_several(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import maskcls.parallel

    monkeypatch.setattr(maskcls.parallel, "CHUNK_PER_WORKER", 3)  # many chunks
    (tmp_path / "cls").mkdir()
    paths = []
    for k in range(510):  # past one progress call (every 500)
        rel = f"cls/{k}.{'jpg' if k % 3 else 'png'}"
        img = random_bgr(k, h=16 + k % 9, w=14 + k % 7)
        (tmp_path / rel).write_bytes(encode(img, ".jpg" if k % 3 else ".png"))
        paths.append(rel)
    for cfg in (PreprocessConfig(size=10), PreprocessConfig(size=12, color_mode="rgb")):
        one_calls: list[tuple[int, ...]] = []
        three_calls: list[tuple[int, ...]] = []
        one = preprocess_files(tmp_path, paths, cfg, lambda *call, to=one_calls: to.append(call), workers=1)
        three = preprocess_files(tmp_path, paths, cfg, lambda *call, to=three_calls: to.append(call), workers=3)
        np.testing.assert_array_equal(three, one)
        assert three_calls == one_calls == [(500, 510)]
    # Two broken files: both ways name the first one in the given order, and only it.
    (tmp_path / "cls/broken_a.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (tmp_path / "cls/broken_b.png").write_bytes(b"")
    broken = [*paths[:40], "cls/broken_b.png", *paths[40:80], "cls/broken_a.jpg", *paths[80:]]
    messages = set()
    for workers in (1, 3):
        with pytest.raises(DecodeError) as exc:
            preprocess_files(tmp_path, broken, PreprocessConfig(size=8), workers=workers)
        messages.add(str(exc.value))
    assert len(messages) == 1
    (message,) = messages
    assert "broken_b.png" in message and "broken_a.jpg" not in message


def test_preprocess_files_of_nothing_is_an_empty_batch(tmp_path: Path) -> None:
    out = preprocess_files(tmp_path, [], PreprocessConfig(size=8, color_mode="rgb"))
    assert out.shape == (0, 8, 8, 3)
