"""Rendering of demo items: Pillow images (shape, colour, pattern) and generated text.

Visual attributes (colour, shape, pattern) are drawn; textual ones (category, style,
material) are written, and the colour is also named in the text for only a share of
the items, so neither modality alone carries every attribute the simulated users
care about.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40), "orange": (240, 135, 30), "yellow": (235, 205, 35), "green": (45, 155, 70),
    "blue": (40, 85, 205), "purple": (125, 55, 175), "pink": (235, 115, 165), "black": (30, 30, 30),
}
SHAPES = ("circle", "square", "triangle", "diamond", "star")
PATTERNS = ("solid", "stripes", "dots", "checks")
CATEGORIES = ("shirt", "dress", "sneakers", "handbag", "hat", "jacket", "scarf", "lamp")
STYLES = ("casual", "formal", "sporty", "vintage", "minimalist", "bohemian")
MATERIALS = ("cotton", "leather", "wool", "silk", "denim", "linen")

FACTORS: dict[str, tuple[str, ...]] = {
    "colour": tuple(COLOURS), "shape": SHAPES, "pattern": PATTERNS,
    "category": CATEGORIES, "style": STYLES, "material": MATERIALS,
}
VISUAL_FACTORS = ("colour", "shape", "pattern")
TEXT_FACTORS = ("category", "style", "material")

_OPENERS = (
    "A {style} {category} made of {material}.",
    "This {material} {category} suits a {style} wardrobe.",
    "{Style} {category} crafted from {material}.",
    "An everyday {category} with a {style} cut, in {material}.",
)
_COLOUR_LINES = ("It comes in {colour}.", "Finished in {colour}.", "A {colour} piece.")
_FILLERS = (
    "Easy to care for.", "Designed to last.", "A customer favourite.", "Lightweight and practical.",
    "Made in small batches.", "Pairs well with most outfits.", "Gift-ready packaging.", "",
)


def _shape_points(shape: str, size: int) -> list[tuple[float, float]]:
    """Polygon of a shape centred in a size x size canvas (circle handled by the caller)."""
    c, r = size / 2, size * 0.38
    if shape == "square":
        return [(c - r, c - r), (c + r, c - r), (c + r, c + r), (c - r, c + r)]
    if shape == "triangle":
        return [(c, c - r), (c + r, c + r * 0.8), (c - r, c + r * 0.8)]
    if shape == "diamond":
        return [(c, c - r), (c + r, c), (c, c + r), (c - r, c)]
    pts = []  # star: 5 outer and 5 inner points
    for k in range(10):
        rad = r if k % 2 == 0 else r * 0.45
        ang = -math.pi / 2 + k * math.pi / 5
        pts.append((c + rad * math.cos(ang), c + rad * math.sin(ang)))
    return pts


@lru_cache(maxsize=256)
def _masks(shape: str, pattern: str, size: int) -> tuple[Image.Image, Image.Image]:
    """(shape mask, pattern mask) as "L" images; drawn once per combination, then reused."""
    from PIL import Image, ImageDraw

    shape_mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(shape_mask)
    if shape == "circle":
        r = size * 0.38
        draw.ellipse([size / 2 - r, size / 2 - r, size / 2 + r, size / 2 + r], fill=255)
    else:
        draw.polygon(_shape_points(shape, size), fill=255)
    pattern_mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(pattern_mask)
    step = max(4, size // 8)
    if pattern == "stripes":
        for x in range(-size, size, step):
            draw.line([(x, 0), (x + size, size)], fill=255, width=max(1, step // 3))
    elif pattern == "dots":
        rad = max(1, step // 4)
        for y in range(step // 2, size, step):
            for x in range(step // 2, size, step):
                draw.ellipse([x - rad, y - rad, x + rad, y + rad], fill=255)
    elif pattern == "checks":
        for y in range(0, size, step):
            for x in range((y // step) % 2 * step, size, 2 * step):
                draw.rectangle([x, y, x + step - 1, y + step - 1], fill=255)
    return shape_mask, pattern_mask


def render_image(colour: str, shape: str, pattern: str, size: int, jitter: np.ndarray) -> Image.Image:
    """One item picture: a patterned shape of the colour on a light background.

    Args:
        jitter: 4 numbers in [-1, 1] (colour tint, background tint) that make items differ.
    """
    from PIL import Image

    rgb = tuple(int(np.clip(v + 18 * jitter[k], 0, 255)) for k, v in enumerate(COLOURS[colour]))
    light = tuple(int(v + (255 - v) * 0.6) for v in rgb)  # the pattern: a lighter tone of the colour
    bg = int(232 + 14 * jitter[3])
    shape_mask, pattern_mask = _masks(shape, pattern, size)
    fill = Image.composite(Image.new("RGB", (size, size), light), Image.new("RGB", (size, size), rgb), pattern_mask)
    return Image.composite(fill, Image.new("RGB", (size, size), (bg, bg, bg)), shape_mask)


def describe(attrs: dict[str, str], mention_colour: bool, rng: np.random.Generator) -> tuple[str, str]:
    """(title, overview) of an item from its attributes; colour named only when mention_colour."""
    words = {k: v for k, v in attrs.items()}
    words["Style"] = attrs["style"].capitalize()
    title = f"{attrs['style'].capitalize()} {attrs['material']} {attrs['category']}"
    if mention_colour:
        title = f"{attrs['colour'].capitalize()} {title.lower()}"
    lines = [_OPENERS[int(rng.integers(len(_OPENERS)))].format(**words)]
    if mention_colour:
        lines.append(_COLOUR_LINES[int(rng.integers(len(_COLOUR_LINES)))].format(**words))
    lines.append(_FILLERS[int(rng.integers(len(_FILLERS)))])
    return title, " ".join(line for line in lines if line)
