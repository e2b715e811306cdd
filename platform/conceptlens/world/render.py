"""Draw one ConceptWorld image from its label and attributes.

Images are drawn at twice the target size and downsampled (anti-aliasing). Everything
random (position, rotation, texture) comes from the ``rng`` passed in, so a seeded
generator gives identical images on every machine.

A :class:`Style` sets how the world looks without changing what it shows: ``default`` is ConceptWorld;
``restyled`` (other palette, a thick rim, lighter fog, thicker rain, a soft blur) is the domain the ``shifted``
observer is trained in (``vlm.recipe``), a VLM then used on the default world, as a real CLIP meets a user's
images.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

COLORS = {
    "red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 90, 235),
    "yellow": (240, 220, 40), "purple": (160, 60, 200),
}
BACKGROUNDS = {
    "grass": (70, 130, 50), "water": (40, 100, 160), "sand": (205, 185, 130), "indoor": (125, 120, 115),
}


@dataclass(frozen=True)
class Style:
    """How an image is drawn. ``colors``/``backgrounds`` override the RGB of some values; ``rim`` is the dark
    outline's width (a MaxFilter size, odd); ``fog`` the share of fog grey; ``rain_width`` the width of a rain
    streak as a share of the side; ``blur`` a Gaussian blur radius in pixels of the drawn (2x) image."""
    colors: dict = field(default_factory=dict)
    backgrounds: dict = field(default_factory=dict)
    rim: int = 5
    fog: float = 0.55
    rain_width: float = 1 / 64
    blur: float = 0.0

    def color(self, name: str) -> tuple[int, int, int]:
        return self.colors.get(name, COLORS[name])

    def background(self, name: str) -> tuple[int, int, int]:
        return self.backgrounds.get(name, BACKGROUNDS[name])


STYLES = {
    "default": Style(),
    "restyled": Style(colors={"red": (190, 70, 50), "green": (90, 170, 40), "blue": (40, 120, 200),
                              "yellow": (225, 190, 70), "purple": (130, 80, 170)},
                      backgrounds={"grass": (95, 120, 45), "water": (30, 120, 140), "sand": (180, 160, 120),
                                   "indoor": (140, 130, 110)},
                      rim=9, fog=0.4, rain_width=1 / 32, blur=1.5),
}

SMALL_RADIUS, LARGE_RADIUS = (0.22, 0.26), (0.33, 0.39)  # fraction of the image side


def _polygon(label: str) -> list[tuple[float, float]] | None:
    """Outline of a shape in unit coordinates (radius about 1), or None for curved shapes."""
    if label == "square":
        return [(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)]
    if label == "triangle":
        return [(0, -1), (0.95, 0.75), (-0.95, 0.75)]
    if label == "diamond":
        return [(0, -1), (0.65, 0), (0, 1), (-0.65, 0)]
    if label == "hexagon":
        return [(math.cos(a), math.sin(a)) for a in np.arange(6) * math.pi / 3]
    if label == "star":
        return [((1 if i % 2 == 0 else 0.42) * math.cos(a), (1 if i % 2 == 0 else 0.42) * math.sin(a))
                for i, a in enumerate(np.arange(10) * math.pi / 5 - math.pi / 2)]
    if label == "cross":
        w = 0.33
        return [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w),
                (-1, w), (-1, -w), (-w, -w)]
    if label == "arrow":
        return [(-1, -0.3), (0.15, -0.3), (0.15, -0.8), (1, 0), (0.15, 0.8), (0.15, 0.3), (-1, 0.3)]
    if label == "heart":
        t = np.linspace(0, 2 * math.pi, 48, endpoint=False)
        x, y = 16 * np.sin(t) ** 3, -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        return list(zip(x / 16, (y + 2) / 16))
    return None  # circle, crescent


def _shape_mask(label: str, side: int, cx: float, cy: float, r: float, angle: float) -> Image.Image:
    mask = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(mask)
    points = _polygon(label)
    if points is not None:
        c, s = math.cos(angle), math.sin(angle)
        draw.polygon([(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in points], fill=255)
    elif label == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif label == "crescent":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        ox, oy = 0.55 * r * math.cos(angle), 0.55 * r * math.sin(angle)
        draw.ellipse([cx + ox - 0.85 * r, cy + oy - 0.85 * r, cx + ox + 0.85 * r, cy + oy + 0.85 * r], fill=0)
    else:
        raise ValueError(f"unknown ConceptWorld class {label!r}")
    return mask


def _background(name: str, side: int, rng: np.random.Generator, style: Style) -> np.ndarray:
    img = np.empty((side, side, 3), np.float32)
    img[:] = style.background(name)
    ys, xs = np.mgrid[0:side, 0:side] / side
    if name == "grass":  # vertical blades
        img *= (0.8 + 0.35 * (rng.random(side) > 0.6))[None, :, None]
    elif name == "water":  # horizontal waves
        phase = rng.random() * 6.28
        img += (40 * (np.sin(ys * 40 + 3 * np.sin(xs * 9 + phase)) > 0.7))[..., None]
    elif name == "sand":  # speckles
        img *= 0.85 + 0.3 * rng.random((side, side, 1))
    else:  # indoor: a wall above a tiled floor
        img[ys > 0.6] = (90, 70, 55)
        img *= (1 - 0.25 * (((xs * 8).astype(int) + (ys * 8).astype(int)) % 2 == 0) * (ys > 0.6))[..., None]
    return img


def _pattern(name: str, color: tuple[int, int, int], side: int, rng: np.random.Generator) -> np.ndarray:
    fill = np.empty((side, side, 3), np.float32)
    fill[:] = color
    if name == "striped":
        ys, xs = np.mgrid[0:side, 0:side]
        fill[((xs + ys + int(rng.integers(8))) // (side // 16)) % 2 == 0] *= 0.35
    elif name == "dotted":
        ys, xs = np.mgrid[0:side, 0:side]
        step = side // 10
        ox, oy = rng.integers(step, size=2)
        dots = ((xs + ox) % step - step / 2) ** 2 + ((ys + oy) % step - step / 2) ** 2 < (step / 4) ** 2
        fill[dots] = (250, 250, 250)
    return fill


def _weather(img: np.ndarray, name: str, rng: np.random.Generator, style: Style) -> np.ndarray:
    side = img.shape[0]
    if name == "fog":
        return (1 - style.fog) * img + style.fog * 200
    layer = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(layer)
    if name == "rain":
        for x, y in rng.random((60, 2)) * side:
            draw.line([(x, y), (x - side * 0.06, y + side * 0.16)], fill=200, width=max(1, round(side * style.rain_width)))
    elif name == "snow":
        for x, y in rng.random((90, 2)) * side:
            d = side / 70
            draw.ellipse([x - d, y - d, x + d, y + d], fill=255)
    alpha = np.asarray(layer, np.float32)[..., None] / 255
    return img * (1 - alpha) + 235 * alpha


def render(label: str, attributes: dict[str, str], rng: np.random.Generator, size: int = 64,
           style: str = "default") -> np.ndarray:
    """Render one image as ``uint8`` of shape ``(size, size, 3)``.

    ``attributes`` maps every attribute group (see ``vocabulary.GROUPS``) to its value; ``style`` names one of
    :data:`STYLES`. Every style draws the same random numbers, so a seed gives the same scene in each.
    """
    if style not in STYLES:
        raise ValueError(f"unknown ConceptWorld style {style!r}; styles are {sorted(STYLES)}")
    look = STYLES[style]
    side = 2 * size
    lo, hi = LARGE_RADIUS if attributes["size"] == "large" else SMALL_RADIUS
    r = side * rng.uniform(lo, hi)
    margin = r * 1.05
    cx, cy = rng.uniform(margin, side - margin, size=2)
    angle = rng.uniform(-0.25, 0.25)
    mask = _shape_mask(label, side, cx, cy, r, angle)
    outline = np.asarray(mask.filter(ImageFilter.MaxFilter(look.rim)), np.float32)[..., None] / 255
    inside = np.asarray(mask, np.float32)[..., None] / 255

    img = _background(attributes["background"], side, rng, look)
    img = img * (1 - outline) + 20 * outline  # a dark rim keeps every shape visible on every background
    img = img * (1 - inside) + _pattern(attributes["pattern"], look.color(attributes["color"]), side, rng) * inside
    if attributes["occlusion"] == "occluded":  # a grey post in front of the object's near half
        x0 = cx + rng.uniform(-0.6, 0.0) * r
        img[:, int(x0):int(x0 + 0.6 * r)] = (150, 150, 160)
    img = _weather(img, attributes["weather"], rng, look)
    if attributes["lighting"] == "dark":
        img = img * 0.4
    out = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    if look.blur:
        out = out.filter(ImageFilter.GaussianBlur(look.blur))
    out = out.resize((size, size), Image.BOX)
    return np.asarray(out)
