"""Image decoding with a size guard, shared by ingest, featurize and serving.

Every image that enters fusionrec goes through `open_image_checked`: the byte size
is checked before reading, the pixel count from the header before decoding (so a
small file that declares a 100k x 100k canvas never allocates it), and a truncated
or corrupt file is a clear `ImageRejected`, never a Pillow traceback.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")


class ImageRejected(ValueError):
    """An image that cannot be used; `reason` is one of fusionrec.schema.REASONS."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _read_bytes(source: Path | str | bytes, max_bytes: int) -> tuple[bytes, str]:
    """The raw bytes of source and a name for messages; byte limit checked before reading."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        name = "<bytes>"
    else:
        path = Path(source)
        name = str(path)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise ImageRejected("missing_image", f"{name}: file not found") from None
        except OSError as exc:
            raise ImageRejected("unreadable_image", f"{name}: {exc}") from None
        if size > max_bytes:
            raise ImageRejected("oversized_image", f"{name}: {size} bytes > limit {max_bytes}")
        data = path.read_bytes()
    if len(data) > max_bytes:
        raise ImageRejected("oversized_image", f"{name}: {len(data)} bytes > limit {max_bytes}")
    if not data:
        raise ImageRejected("unreadable_image", f"{name}: empty file")
    return data, name


def open_image_checked(
    source: Path | str | bytes, max_pixels: int, max_bytes: int, decode: bool = True
) -> Image.Image:
    """Open an image safely and return it fully loaded (or header-only when decode=False).

    Args:
        source: a file path or the encoded bytes (PNG, JPEG, WebP, ...).
        max_pixels: width * height limit, checked from the header before decoding.
        max_bytes: encoded size limit, checked before the file is read.
        decode: False checks the header only (fast; misses truncated pixel data).

    Returns:
        A PIL image whose pixels are loaded (the file handle is closed).

    Raises:
        ImageRejected: reason "missing_image", "oversized_image" or "unreadable_image".
    """
    from PIL import Image, UnidentifiedImageError

    data, name = _read_bytes(source, max_bytes)
    with warnings.catch_warnings():
        # Pillow's own bomb check only warns below 2x its global limit; ours is the guard.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:
            raise ImageRejected("oversized_image", f"{name}: {exc}") from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            raise ImageRejected("unreadable_image", f"{name}: not a readable image ({exc})") from None
        width, height = img.size
        if width <= 0 or height <= 0:
            raise ImageRejected("unreadable_image", f"{name}: empty canvas {width}x{height}")
        if width * height > max_pixels:
            raise ImageRejected(
                "oversized_image", f"{name}: {width}x{height} = {width * height} pixels > limit {max_pixels}"
            )
        if decode:
            try:
                img.load()
            except Image.DecompressionBombError as exc:
                raise ImageRejected("oversized_image", f"{name}: {exc}") from None
            except (OSError, ValueError, SyntaxError, EOFError) as exc:
                raise ImageRejected("unreadable_image", f"{name}: corrupt or truncated ({exc})") from None
    return img


def open_rgb_checked(source: Path | str | bytes, max_pixels: int, max_bytes: int) -> Image.Image:
    """`open_image_checked` then conversion to RGB (palette, alpha and grey images included)."""
    img = open_image_checked(source, max_pixels, max_bytes, decode=True)
    return img if img.mode == "RGB" else img.convert("RGB")


def default_image_path(folder: Path, images_dir: str, item_id: str, names: set[str] | None = None) -> Path | None:
    """The conventional `images/{item_id}.<ext>` file of an item, or None when there is none.

    Args:
        names: the file names of the images folder (`image_names`), listed once for a whole
            catalogue: one directory read instead of a stat per extension and item.
    """
    for ext in IMAGE_EXTENSIONS:
        name = f"{item_id}{ext}"
        if names is not None and name not in names:
            continue
        candidate = folder / images_dir / name
        if candidate.is_file():
            return candidate
    return None


def image_names(images: Path) -> set[str]:
    """The names of the entries of an images folder (empty when there is no such folder)."""
    try:
        with os.scandir(images) as entries:
            return {e.name for e in entries}
    except (FileNotFoundError, NotADirectoryError):
        return set()
