"""The image size guard: good images load, bad ones are ImageRejected with the right reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.data.image_samples import huge_png, jpeg_bytes, png_bytes, truncated_jpeg, write

from fusionrec.data.images import (
    ImageRejected,
    default_image_path,
    image_names,
    open_image_checked,
    open_rgb_checked,
)

LIMITS = {"max_pixels": 10_000_000, "max_bytes": 1_000_000}


def test_valid_image_from_path_and_bytes(tmp_path: Path) -> None:
    path = write(tmp_path / "a.jpg", jpeg_bytes((24, 16)))
    img = open_image_checked(path, **LIMITS)
    assert img.size == (24, 16)
    assert open_image_checked(png_bytes((5, 7)), **LIMITS).size == (5, 7)
    assert open_rgb_checked(path, **LIMITS).mode == "RGB"


@pytest.mark.parametrize(
    ("data", "limits", "reason"),
    [
        (truncated_jpeg(), LIMITS, "unreadable_image"),
        (huge_png(), LIMITS, "oversized_image"),
        (b"this is not an image", LIMITS, "unreadable_image"),
        (b"", LIMITS, "unreadable_image"),
        (png_bytes((100, 100)), {"max_pixels": 5_000, "max_bytes": 1_000_000}, "oversized_image"),
        (png_bytes((100, 100)), {"max_pixels": 10_000_000, "max_bytes": 50}, "oversized_image"),
    ],
    ids=["truncated-jpeg", "huge-dimension-png", "garbage", "empty", "pixel-limit", "byte-limit"],
)
def test_bad_images_are_rejected(tmp_path: Path, data: bytes, limits: dict[str, int], reason: str) -> None:
    path = write(tmp_path / "bad.img", data)
    for source in (path, data):
        if source == b"" and isinstance(source, bytes):
            continue  # empty bytes and an empty file say the same thing; the file case is enough
        with pytest.raises(ImageRejected) as info:
            open_image_checked(source, **limits)
        assert info.value.reason == reason
        assert info.value.detail


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ImageRejected) as info:
        open_image_checked(tmp_path / "nope.png", **LIMITS)
    assert info.value.reason == "missing_image"
    assert "nope.png" in info.value.detail


def test_header_only_check_skips_decode(tmp_path: Path) -> None:
    """decode=False trusts the header: fast, and it still catches the declared-size bomb."""
    assert open_image_checked(truncated_jpeg(), decode=False, **LIMITS).size == (64, 64)
    with pytest.raises(ImageRejected):
        open_image_checked(huge_png(), decode=False, **LIMITS)


def test_conventional_image_paths_come_from_one_listing_of_the_folder(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    for name in ("a.png", "b.jpg", "b.webp", "c.txt"):
        (tmp_path / "images" / name).write_bytes(b"x")
    names = image_names(tmp_path / "images")
    assert names == {"a.png", "b.jpg", "b.webp", "c.txt"}
    for item in ("a", "b", "c", "missing"):  # the listing finds what probing every extension finds
        assert default_image_path(tmp_path, "images", item, names) == default_image_path(tmp_path, "images", item)
    assert default_image_path(tmp_path, "images", "a", names) == tmp_path / "images" / "a.png"
    assert default_image_path(tmp_path, "images", "c", names) is None
    assert image_names(tmp_path / "no-such-folder") == set()
