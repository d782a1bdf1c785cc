"""Bad and unusual image inputs: handled (rotated, converted, downscaled) or refused with a clear ImageError."""

import io

import numpy as np
import pytest
from PIL import Image

from occmllm.images import ImageError, load_image


def _bytes(image, fmt, **kw):
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kw)
    return buffer.getvalue()


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P", "LA", "1"])
def test_modes_become_rgb(mode):
    image = Image.new(mode, (40, 30))
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    out = load_image(_bytes(image, fmt))
    assert out.mode == "RGB" and out.size == (40, 30)


def test_sixteen_bit_png_scaled_to_8_bit():
    array = np.full((20, 20), 65535, np.uint16)
    array[:10] = 0
    out = np.asarray(load_image(_bytes(Image.fromarray(array), "PNG")))
    assert out.dtype == np.uint8 and out[15, 0, 0] == 255 and out[0, 0, 0] == 0


def test_rgba_transparency_on_black():
    image = Image.new("RGBA", (20, 20), (255, 255, 255, 0))
    assert np.asarray(load_image(image)).max() == 0


def test_exif_rotation_applied():
    image = Image.new("RGB", (60, 20), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 on display
    out = load_image(_bytes(image, "JPEG", exif=exif.tobytes()))
    assert out.size == (20, 60)


def test_animated_gif_first_frame():
    frames = [Image.new("RGB", (20, 20), c) for c in [(255, 0, 0), (0, 0, 255)]]
    data = _bytes(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    out = np.asarray(load_image(data))
    assert out[0, 0, 0] > 200 and out[0, 0, 2] < 50


def test_huge_image_downscaled():
    image = Image.new("RGB", (12000, 12000), (5, 5, 5))
    data = _bytes(image, "JPEG", quality=10)
    assert max(load_image(data, max_side=1024).size) == 1024


@pytest.mark.parametrize("data,needle", [
    (b"", "empty"), (b"hello, this is text", "not an image"), (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "image"),
])
def test_garbage_refused(data, needle):
    with pytest.raises(ImageError, match=needle):
        load_image(data)


def test_truncated_jpeg_refused_or_loaded_without_crash():
    data = _bytes(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)), "JPEG")
    with pytest.raises(ImageError, match="corrupt or truncated"):
        load_image(data[: len(data) // 2])


def test_tiny_and_missing_refused(tmp_path):
    with pytest.raises(ImageError, match="too small"):
        load_image(_bytes(Image.new("RGB", (1, 1)), "PNG"))
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="folder"):
        load_image(tmp_path)


def test_decompression_bomb_refused():
    data = _bytes(Image.new("1", (20000, 10000)), "PNG")  # 200 MP, a small file
    with pytest.raises(ImageError, match="too many pixels"):
        load_image(data)
