"""The scene renderer behind both synthetic sets: stylised pedestrians seen by stylised cameras.

Why it exists: every synthetic set reidbench writes (the Market-1501-layout
set of :mod:`~reidbench.data.synthetic.market` and the RGB/NIR/TIR set of
:mod:`~reidbench.data.synthetic.rgbnt`) must draw the same kind of people in
the same kind of scenes, so that what one set teaches about pose, view,
occlusion and background holds for the other. What makes a set hard lives here:

* **Identities** (:class:`Identity`, drawn by :func:`random_identity`) are
  stylised pedestrians drawn from small palettes, so many share their upper or
  lower colour and differ only in pattern (plain, stripes, checks, a logo on the
  chest, an open jacket), sleeves, trousers / shorts / skirt, hair, hat, shoes,
  bag, or proportions (height, shoulder width, leg length, head size).
* **Cameras** (:class:`Camera`, drawn by :func:`random_camera`) each have a
  usual viewpoint (front, back, left or right side; a logo or an open jacket
  shows only from the front, a backpack mostly from the back, a shoulder bag
  only from its own side), a scale, an illumination (gain, colour cast, gamma,
  light gradient), a blur, a sensor-noise level, their own textured background,
  and a rate of partial occlusion (poles, parked objects, passers-by).

The public API is what a writer needs: :func:`render` makes one RGB image;
a writer that wants more channels than RGB calls its two halves itself,
:func:`compose` (the scene, on a canvas with as many channels as the camera's
plate, its occluders supplied through :class:`Occluders`) and :func:`develop`
(what the RGB camera makes of the first three), and builds its own sensors
from :func:`gamma_lut`, :func:`gaussian_blur` and :func:`clamp_unit`.

Nothing here draws its own random numbers: every function takes the
``numpy`` generator to draw from, so a writer that keys one stream per image
gets byte-identical files for the same settings. Drawing is vectorised numpy
on small windows.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

SCENE_VERSION = 1
"""Bump when the same random streams would draw different images: both sets key their streams and
record their manifests with it, so every cached set is regenerated."""

# --- colours ------------------------------------------------------------------------------------


def _rgb(*colours: tuple[int, int, int]) -> np.ndarray:
    return np.array(colours, dtype=np.float32) / 255.0


_CLOTHES = _rgb(
    (28, 28, 30), (68, 68, 74), (128, 128, 132), (222, 222, 216), (32, 42, 88), (48, 88, 168),
    (128, 168, 208), (168, 34, 40), (98, 30, 40), (40, 108, 58), (108, 108, 58), (108, 74, 44),
    (198, 178, 138), (218, 188, 58), (218, 138, 168), (98, 58, 128), (218, 118, 40), (40, 128, 128),
)
_CLOTHES_P = np.array([3, 2, 2, 2, 2, 1.5, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1])
_CLOTHES_P = _CLOTHES_P / _CLOTHES_P.sum()
_SKIN = _rgb((250, 218, 190), (232, 192, 158), (208, 162, 122), (168, 118, 84), (128, 88, 60), (92, 64, 44))
_HAIR = _rgb((20, 18, 18), (54, 38, 28), (98, 68, 44), (188, 158, 98), (150, 148, 146), (138, 68, 38))
_SHOES = _rgb((20, 20, 20), (230, 230, 230), (90, 60, 40), (110, 110, 115))
_DARK = 0.0
"""Shadows and eyes: a scalar, so that it paints a canvas of any number of channels (RGB, or one per modality)."""

# --- identities and cameras ---------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Identity:
    """One pedestrian's look and build: what stays the same in every image of that identity.

    Colours are float arrays, RGB by default; a writer that draws more channels
    replaces them (``dataclasses.replace``) with arrays of its canvas's channels.
    """

    skin: np.ndarray
    hair: np.ndarray
    upper: np.ndarray
    upper2: np.ndarray
    lower: np.ndarray
    shoes: np.ndarray
    bag_colour: np.ndarray
    hair_style: str  # short | long | bald | hat
    pattern: str  # plain | hstripes | vstripes | checks | logo | jacket
    stripe: float  # stripe period, fraction of body height
    sleeves: str  # long | short
    lower_kind: str  # trousers | shorts | skirt
    bag: str  # none | backpack | shoulder
    bag_side: int  # +1: on the person's left, -1: right
    height: float  # fraction of the camera's person height
    width: float  # half shoulder width, fraction of body height
    leg: float  # hip-to-floor, fraction of body height
    head: float  # head half-height, fraction of body height


def _choice(rng: np.random.Generator, options: tuple[str, ...], p: tuple[float, ...]) -> str:
    return options[int(rng.choice(len(options), p=p))]


def _jitter(rng: np.random.Generator, colour: np.ndarray) -> np.ndarray:
    """A palette colour made this identity's own: no two reds are quite the same."""
    return np.clip(colour * (1 + rng.normal(0, 0.05, 3)), 0, 1).astype(np.float32)


def _colour(rng: np.random.Generator, palette: np.ndarray, p: np.ndarray | None = None) -> np.ndarray:
    return _jitter(rng, palette[int(rng.choice(len(palette), p=p))])


def random_identity(rng: np.random.Generator) -> Identity:
    """A new pedestrian from the palettes and proportions above: common colours are common, so many look alike."""
    upper = int(rng.choice(len(_CLOTHES), p=_CLOTHES_P))
    upper2 = (upper + 1 + int(rng.integers(len(_CLOTHES) - 1))) % len(_CLOTHES)  # any other colour
    return Identity(
        skin=_colour(rng, _SKIN),
        hair=_colour(rng, _HAIR),
        upper=_jitter(rng, _CLOTHES[upper]),
        upper2=_jitter(rng, _CLOTHES[upper2]),
        lower=_colour(rng, _CLOTHES, _CLOTHES_P),
        shoes=_colour(rng, _SHOES),
        bag_colour=_colour(rng, _CLOTHES, _CLOTHES_P),
        hair_style=_choice(rng, ("short", "long", "bald", "hat"), (0.55, 0.3, 0.05, 0.1)),
        pattern=_choice(
            rng, ("plain", "hstripes", "vstripes", "checks", "logo", "jacket"), (0.3, 0.15, 0.1, 0.1, 0.15, 0.2)
        ),
        stripe=float(rng.uniform(0.035, 0.06)),
        sleeves=_choice(rng, ("long", "short"), (0.6, 0.4)),
        lower_kind=_choice(rng, ("trousers", "shorts", "skirt"), (0.65, 0.15, 0.2)),
        bag=_choice(rng, ("none", "backpack", "shoulder"), (0.5, 0.3, 0.2)),
        bag_side=int(rng.choice((-1, 1))),
        height=float(rng.uniform(0.88, 1.0)),
        width=float(rng.uniform(0.10, 0.145)),
        leg=float(rng.uniform(0.44, 0.52)),
        head=float(rng.uniform(0.058, 0.072)),
    )


#: A camera's usual (view, facing): facing +1 walks towards image right, so its left side shows.
_VIEW_CYCLE = (("front", 1), ("back", 1), ("side", 1), ("side", -1), ("front", 1), ("back", 1))
_ALL_VIEWS = (("front", 1), ("back", 1), ("side", 1), ("side", -1))


@dataclass(frozen=True, eq=False)
class Camera:
    """One camera's fixed viewpoint, optics, sensor and scene.

    A writer that draws more channels than RGB appends them to ``plate`` and ``pole`` (``dataclasses.replace``).
    """

    view: tuple[str, int]
    view_p: float  # probability of the usual view; otherwise any other
    scale: float  # person height / image height
    gain: float
    cast: np.ndarray
    lut: np.ndarray  # 1024 levels -> uint8, with this camera's gamma
    gradient: float  # top-to-bottom light falloff
    blur: float  # Gaussian sigma in pixels at image height 128
    noise: np.ndarray  # (2H, 2W, 3) sensor noise to crop from, std 0.008..0.03 of full scale
    occlusion: float  # probability that an image is partly occluded
    pole: np.ndarray  # this camera's pole colour
    plate: np.ndarray  # (H, 3W, 3) background to crop from


def gamma_lut(gamma: float) -> np.ndarray:
    """A sensor's response: 1024 linear levels in [0, 1] to uint8 through ``gamma``, looked up instead of computed."""
    return (np.linspace(0, 1, 1024) ** gamma * 255 + 0.5).astype(np.uint8)


def random_camera(rng: np.random.Generator, index: int, size: tuple[int, int]) -> Camera:
    """Camera ``index`` of a set with images of ``size``: its usual view cycles with ``index``, the rest is drawn."""
    return Camera(
        view=_VIEW_CYCLE[index % len(_VIEW_CYCLE)],
        view_p=float(rng.uniform(0.65, 0.85)),
        scale=float(rng.uniform(0.8, 0.93)),
        gain=float(rng.uniform(0.6, 1.3)),
        cast=(1 + rng.normal(0, 0.1, 3)).astype(np.float32),
        lut=gamma_lut(float(rng.uniform(0.8, 1.25))),
        gradient=float(rng.uniform(-0.25, 0.35)),
        blur=float(rng.choice((0.0, 0.5, 0.9, 1.3))),
        noise=rng.standard_normal((2 * size[0], 2 * size[1], 3), dtype=np.float32) * rng.uniform(0.008, 0.03),
        occlusion=float(rng.uniform(0.1, 0.4)),
        pole=_colour(rng, _rgb((90, 90, 95), (60, 70, 60), (150, 140, 120), (40, 40, 45))),
        plate=_background_plate(rng, size),
    )


# --- drawing ------------------------------------------------------------------------------------


def clamp_unit(a: np.ndarray) -> np.ndarray:
    """Clamp to [0, 1] in place (np.clip's overhead dominates on these small windows)."""
    return np.minimum(np.maximum(a, 0, out=a), 1, out=a)


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of an (H, W, C) float image, edges repeated: cheaper than PIL on float data."""
    r = int(np.ceil(2 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2).astype(np.float32)
    k /= k.sum()
    h, w = img.shape[:2]
    pad = np.pad(img, ((r, r), (r, r), (0, 0)), mode="edge")
    rows = k[0] * pad[:h]
    for i in range(1, 2 * r + 1):
        rows += k[i] * pad[i : i + h]
    out = k[0] * rows[:, :w]
    for i in range(1, 2 * r + 1):
        out += k[i] * rows[:, i : i + w]
    return out


class _Canvas:
    """A float RGB image plus shape primitives that touch only their bounding window.

    Each shape computes a soft (about one pixel) coverage ``alpha`` over its
    window and blends a colour, or a per-pixel colour array, into it.
    """

    def __init__(self, img: np.ndarray) -> None:
        self.img = img
        self.h, self.w = img.shape[:2]
        self.ys = np.arange(self.h, dtype=np.float32) + 0.5
        self.xs = np.arange(self.w, dtype=np.float32) + 0.5

    def _window(self, y0: float, y1: float, x0: float, x1: float):
        iy0, iy1 = max(int(y0) - 1, 0), min(int(y1) + 2, self.h)
        ix0, ix1 = max(int(x0) - 1, 0), min(int(x1) + 2, self.w)
        if iy0 >= iy1 or ix0 >= ix1:
            return None
        return (slice(iy0, iy1), slice(ix0, ix1)), self.ys[iy0:iy1, None], self.xs[None, ix0:ix1]

    def _blend(self, win, alpha: np.ndarray, colour, opacity: float = 1.0) -> None:
        region = self.img[win]
        weight = alpha[..., None] if opacity == 1.0 else alpha[..., None] * opacity
        region += (colour - region) * weight

    def blob(self, colour, cy, cx, ry, rx, p: float = 2.0, opacity: float = 1.0, shade=None) -> None:
        """Ellipse (p=2) or rounded rectangle (p>2) centred at (cy, cx) with radii (ry, rx)."""
        got = self._window(cy - ry, cy + ry, cx - rx, cx + rx)
        if got is None:
            return
        win, y, x = got
        dy, dx = np.abs((y - cy) / ry), np.abs((x - cx) / rx)
        d = np.sqrt(dy * dy + dx * dx) if p == 2 else (dy**p + dx**p) ** (1 / p)
        alpha = clamp_unit((1 - d) * min(ry, rx) + 0.5)
        self._blend(win, alpha, colour if shade is None else shade(y, x, colour), opacity)

    def capsule(self, colour, y0, x0, y1, x1, r0, r1=None) -> None:
        """A limb: segment (y0, x0)-(y1, x1) thickened to radius r0 at one end and r1 at the other."""
        r1 = r0 if r1 is None else r1
        r = max(r0, r1)
        got = self._window(min(y0, y1) - r, max(y0, y1) + r, min(x0, x1) - r, max(x0, x1) + r)
        if got is None:
            return
        win, y, x = got
        vy, vx = y1 - y0, x1 - x0
        t = clamp_unit(((y - y0) * vy + (x - x0) * vx) / max(vy * vy + vx * vx, 1e-6))
        dist = np.hypot(y - (y0 + t * vy), x - (x0 + t * vx))
        alpha = clamp_unit(r0 + t * (r1 - r0) - dist + 0.5)
        self._blend(win, alpha, colour)

    def trapezoid(self, colour, top, bottom, cx, hw_top, hw_bottom, shade=None) -> None:
        """Horizontal top and bottom edges, half-width going linearly from hw_top to hw_bottom."""
        got = self._window(top, bottom, cx - max(hw_top, hw_bottom), cx + max(hw_top, hw_bottom))
        if got is None:
            return
        win, y, x = got
        hw = hw_top + (y - top) * ((hw_bottom - hw_top) / max(bottom - top, 1e-6))
        edge = np.minimum(hw - np.abs(x - cx), np.minimum(y - top, bottom - y))
        alpha = clamp_unit(edge + 0.5)
        self._blend(win, alpha, colour if shade is None else shade(y, x, colour))


_WALLS = _rgb(
    (150, 150, 148), (186, 172, 150), (140, 90, 72), (110, 120, 130), (200, 196, 186), (90, 96, 90),
    (160, 140, 110), (120, 130, 150),
)
_FLOORS = _rgb((120, 120, 118), (90, 84, 78), (150, 140, 124), (70, 74, 80), (110, 100, 80))


def _background_plate(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A camera's scene, three images wide: a wall with clutter above a paved floor, with stains."""
    h, w = size
    pw = 3 * w
    wall = _colour(rng, _WALLS)
    floor = _colour(rng, _FLOORS)
    horizon = h * rng.uniform(0.45, 0.7)
    img = np.empty((h, pw, 3), np.float32)
    img[:] = wall
    img[int(horizon):] = floor
    canvas = _Canvas(img)
    s = h / 128
    for _ in range(int(rng.integers(8, 20))):  # windows, doors, signs, shelves
        cy, cx = rng.uniform(0, horizon), rng.uniform(0, pw)
        colour = np.clip(wall * rng.uniform(0.4, 1.3) + rng.normal(0, 0.08, 3), 0, 1)
        canvas.blob(colour, cy, cx, rng.uniform(3, 18) * s, rng.uniform(3, 14) * s, p=8)
    for _ in range(int(rng.integers(0, 4))):  # bushes, bins, planters
        colour = np.clip(rng.uniform(0.15, 0.5) * np.array([0.7, 1.0, 0.6]) + rng.normal(0, 0.05, 3), 0, 1)
        canvas.blob(colour, horizon + rng.uniform(-4, 4) * s, rng.uniform(0, pw), rng.uniform(5, 14) * s,
                    rng.uniform(5, 16) * s)
    period = rng.uniform(6, 16) * s  # floor tiles or paving lines
    rows = (canvas.ys[int(horizon):, None] - horizon) % period < 1.2 * s
    img[int(horizon):] *= np.where(rows, 0.85, 1.0)[..., None].astype(np.float32)
    # Smooth stains and uneven light: mostly brightness, a little colour.
    coarse = rng.normal(0, 0.07, (max(h // 8, 2), max(pw // 8, 2), 1)) + rng.normal(0, 0.015, (1, 1, 3))
    coarse = coarse + rng.normal(0, 0.015, (max(h // 8, 2), max(pw // 8, 2), 3))
    for c in range(3):
        stain = Image.fromarray(coarse[..., c].astype(np.float32)).resize((pw, h), Image.Resampling.BILINEAR)
        img[..., c] += np.asarray(stain)
    return np.clip(img, 0, 1)


def _cylinder(cx: float, half_width: float):
    """Shading that darkens towards the sides, so torsos look round."""

    def shade(y, x, colour):
        k = 1 - 0.28 * np.clip(((x - cx) / half_width) ** 2, 0, 1.5)
        return colour * k[..., None]

    return shade


def _pattern(ident: Identity, view: str, top: float, cx: float, u: float, hw: float):
    """Shading plus the identity's clothing pattern as seen from ``view``."""
    period = ident.stripe * u
    cyl = _cylinder(cx, hw)

    def shade(y, x, colour):
        if ident.pattern == "hstripes":
            mask = ((y - top) // period) % 2 == 1
        elif ident.pattern == "vstripes":
            mask = ((x - cx + 100 * period) // period) % 2 == 1
        elif ident.pattern == "checks":
            mask = (((y - top) // period) + ((x - cx + 100 * period) // period)) % 2 == 1
        elif ident.pattern == "jacket" and view == "front":  # open jacket: the shirt shows
            mask = np.abs(x - cx) < hw * 0.3
        else:
            return cyl(y, x, colour)
        return cyl(y, x, np.where(mask[..., None], ident.upper2, colour))

    return shade


_FAR_LIGHT = 0.72
"""Brightness factor of the far arm and leg in side view: the body shades them."""


@dataclass(frozen=True)
class _Figure:
    """Where the parts of one drawn pedestrian go, in pixels, shared by the steps of :func:`_draw_person`."""

    view: str  # front | back | side
    facing: int  # +1: walks towards image right
    cx: float  # x of the body's centre line
    feet: float  # y where the feet touch the ground
    u: float  # height of the person
    stride: float  # -1..1: where the feet are in the step
    swing: float  # -1..1: where the hands are in the arm swing
    hry: float  # head half-height
    hrx: float  # head half-width
    head_cy: float  # y of the head's centre
    shoulder: float  # y of the shoulders
    hip: float  # y of the hips
    knee: float  # y of the knees
    sw: float  # half shoulder width
    tw_top: float  # torso half-width at the shoulders, as seen from this view
    tw_bot: float  # torso half-width at the hips, as seen from this view
    leg_r: float  # leg radius
    arm_r: float  # arm radius

    @property
    def side(self) -> bool:
        return self.view == "side"


def _figure(
    ident: Identity, view: str, facing: int, cx: float, feet: float, u: float, stride: float, swing: float
) -> _Figure:
    """Lay out the body of ``ident`` from its proportions; a side view shows a narrower torso and wider legs."""
    side = view == "side"
    hry = u * ident.head
    top = feet - u
    hip = feet - u * ident.leg
    sw = u * ident.width
    tw_top, tw_bot = (sw * 0.6, sw * 0.55) if side else (sw, sw * 0.8)
    return _Figure(
        view=view, facing=facing, cx=cx, feet=feet, u=u, stride=stride, swing=swing,
        hry=hry, hrx=hry * 0.8, head_cy=top + hry, shoulder=top + 2 * hry + 0.02 * u, hip=hip,
        knee=(hip + feet) / 2, sw=sw, tw_top=tw_top, tw_bot=tw_bot,
        leg_r=sw * (0.36 if side else 0.3), arm_r=sw * 0.2,
    )


def _draw_behind_body(cv: _Canvas, ident: Identity, fig: _Figure) -> None:
    """What the body covers: long hair seen from the front; in side view the far arm and the bags behind."""
    f, cx, u, sw, shoulder, hip, arm_r = fig.facing, fig.cx, fig.u, fig.sw, fig.shoulder, fig.hip, fig.arm_r
    if ident.hair_style == "long" and fig.view == "front":
        cv.blob(ident.hair, shoulder, cx, fig.hry * 1.5, fig.hrx * 1.15, p=4)
    if not fig.side:
        return
    far, swing = _FAR_LIGHT, fig.swing
    cv.capsule(ident.upper * far, shoulder + arm_r, cx, hip, cx - f * swing * u * 0.1, arm_r)
    cv.capsule(ident.skin * far, hip, cx - f * swing * u * 0.1, hip + 0.02 * u, cx - f * swing * u * 0.11,
               arm_r * 1.1)
    if ident.bag == "backpack":
        cv.blob(ident.bag_colour, shoulder + 0.12 * u, cx - f * fig.tw_top * 1.05, 0.12 * u, sw * 0.45, p=4)
    if ident.bag == "shoulder" and ident.bag_side != f:  # on the hidden side: only a sliver shows
        cv.blob(ident.bag_colour * 0.8, hip, cx - f * sw * 0.35, 0.055 * u, sw * 0.55, p=4)


def _draw_leg(cv: _Canvas, ident: Identity, fig: _Figure, s: int, light: float) -> None:
    """One leg on side ``s`` (-1 or +1 in image x) with its shoe, darkened by ``light``."""
    side, cx, u, sw, hip, feet, leg_r = fig.side, fig.cx, fig.u, fig.sw, fig.hip, fig.feet, fig.leg_r
    stride = fig.stride
    if side:
        hx, fx = cx, cx + s * stride * u * 0.13
    else:
        hx, fx = cx + s * sw * 0.42, cx + s * sw * (0.48 + 0.05 * stride * s)
    lower = ident.lower * light
    skin = ident.skin * light
    if ident.lower_kind == "trousers":
        cv.capsule(lower, hip, hx, feet - leg_r * 0.6, fx, leg_r * 1.1, leg_r * 0.85)
    else:
        cv.capsule(skin, hip, hx, feet - leg_r * 0.6, fx, leg_r * 0.95, leg_r * 0.7)
        if ident.lower_kind == "shorts":
            kx = (hx + fx) / 2
            cv.capsule(lower, hip, hx, fig.knee - 0.02 * u, hx + (kx - hx) * 0.8, leg_r * 1.2)
    sx = fx + (fig.facing * leg_r * 0.6 if side else 0.0)
    cv.blob(ident.shoes * light, feet - leg_r * 0.55, sx, leg_r * 0.6, leg_r * (1.5 if side else 1.1))


def _draw_legs(cv: _Canvas, ident: Identity, fig: _Figure) -> None:
    """Both legs (the far one first, in shadow, in side view), then the waistband or the skirt over them."""
    f, cx, u, hip, tw_bot = fig.facing, fig.cx, fig.u, fig.hip, fig.tw_bot
    legs = ((-1, 1), (1, 1)) if not fig.side else ((-f, _FAR_LIGHT), (f, 1.0))
    for s, light in legs:
        _draw_leg(cv, ident, fig, s, light)
    if ident.lower_kind != "skirt":
        cv.trapezoid(ident.lower, hip - 0.02 * u, hip + 0.05 * u, cx, tw_bot, tw_bot * 1.02)
    else:
        cv.trapezoid(ident.lower, hip - 0.02 * u, fig.knee + 0.02 * u, cx, tw_bot, tw_bot * 1.6,
                     shade=_cylinder(cx, tw_bot * 1.6))


def _draw_arms_beside_torso(cv: _Canvas, ident: Identity, fig: _Figure) -> None:
    """Both arms of a front or back view, drawn before the torso so it covers their inner edge."""
    cx, u, sw, tw_top, shoulder, hip, arm_r = fig.cx, fig.u, fig.sw, fig.tw_top, fig.shoulder, fig.hip, fig.arm_r
    for s in (-1, 1):
        sx, hx = cx + s * tw_top * 0.9, cx + s * (tw_top * 1.05 + fig.swing * s * sw * 0.15)
        sleeve = ident.upper if ident.sleeves == "long" else ident.skin
        cv.capsule(sleeve, shoulder + arm_r, sx, hip + 0.01 * u, hx, arm_r * 1.1, arm_r)
        if ident.sleeves == "short":
            cv.capsule(ident.upper, shoulder + arm_r, sx, shoulder + 0.12 * u, sx + s * sw * 0.05, arm_r * 1.3)
        cv.blob(ident.skin, hip + 0.03 * u, hx, arm_r * 1.1, arm_r * 1.0)


def _draw_torso(cv: _Canvas, ident: Identity, fig: _Figure) -> None:
    """Torso with the clothing pattern, the neck, and a chest logo when seen from the front."""
    cx, u, sw, tw_top, shoulder, hry, hrx = fig.cx, fig.u, fig.sw, fig.tw_top, fig.shoulder, fig.hry, fig.hrx
    view = fig.view
    cv.trapezoid(ident.upper, shoulder, fig.hip + 0.01 * u, cx, tw_top, fig.tw_bot,
                 shade=_pattern(ident, view, shoulder, cx, u, tw_top))
    cv.blob(ident.upper, shoulder + sw * 0.2, cx, sw * 0.25, tw_top, p=2.5,
            shade=_pattern(ident, view, shoulder, cx, u, tw_top))
    cv.trapezoid(ident.skin, fig.head_cy + hry * 0.5, shoulder + 0.01 * u, cx, hrx * 0.42, hrx * 0.5)
    if view == "front" and ident.pattern == "logo":
        cv.blob(ident.upper2, shoulder + 0.11 * u, cx, sw * 0.28, sw * 0.28, p=1.3)


def _draw_backpack(cv: _Canvas, ident: Identity, fig: _Figure) -> None:
    """The part of a backpack that is in front of the torso: the pack from the back, else its straps."""
    f, cx, u, sw, tw_top, shoulder = fig.facing, fig.cx, fig.u, fig.sw, fig.tw_top, fig.shoulder
    if fig.view == "back":
        cv.blob(ident.bag_colour, shoulder + 0.15 * u, cx, 0.13 * u, tw_top * 0.78, p=4)
        cv.blob(ident.bag_colour * 0.75, shoulder + 0.22 * u, cx, 0.04 * u, tw_top * 0.5, p=4)
    elif fig.view == "front":
        for s in (-1, 1):
            cv.capsule(ident.bag_colour * 0.6, shoulder, cx + s * tw_top * 0.55, shoulder + 0.2 * u,
                       cx + s * tw_top * 0.62, sw * 0.09)
    else:
        cv.capsule(ident.bag_colour * 0.6, shoulder, cx, shoulder + 0.2 * u, cx - f * sw * 0.15, sw * 0.09)


def _draw_shoulder_bag(cv: _Canvas, ident: Identity, fig: _Figure) -> None:
    """A shoulder bag and its strap across the torso; from the side only when it hangs on the visible side."""
    f, cx, u, sw, shoulder, hip = fig.facing, fig.cx, fig.u, fig.sw, fig.shoulder, fig.hip
    if fig.side and ident.bag_side == f:
        cv.capsule(ident.bag_colour * 0.7, shoulder, cx, hip - 0.02 * u, cx - f * sw * 0.1, sw * 0.07)
        cv.blob(ident.bag_colour, hip, cx - f * sw * 0.1, 0.06 * u, sw * 0.6, p=4)
    elif not fig.side:
        s = ident.bag_side if fig.view == "front" else -ident.bag_side  # the person's left is image right
        cv.capsule(ident.bag_colour * 0.7, shoulder, cx - s * fig.tw_top * 0.6, hip - 0.02 * u,
                   cx + s * (fig.tw_bot + sw * 0.2), sw * 0.07)
        cv.blob(ident.bag_colour, hip, cx + s * (fig.tw_bot + sw * 0.25), 0.06 * u, sw * 0.35, p=4)


def _draw_near_arm(cv: _Canvas, ident: Identity, fig: _Figure) -> None:
    """The arm nearer the camera in side view, drawn over the torso and any bag."""
    f, cx, u, shoulder, hip, arm_r = fig.facing, fig.cx, fig.u, fig.shoulder, fig.hip, fig.arm_r
    sleeve = ident.upper if ident.sleeves == "long" else ident.skin
    hx = cx + f * fig.swing * u * 0.1
    cv.capsule(sleeve, shoulder + arm_r, cx, hip, hx, arm_r * 1.15, arm_r)
    if ident.sleeves == "short":
        cv.capsule(ident.upper, shoulder + arm_r, cx, shoulder + 0.12 * u, cx + (hx - cx) * 0.4, arm_r * 1.35)
    cv.blob(ident.skin, hip + 0.02 * u, hx + f * u * 0.005, arm_r * 1.1, arm_r)


def _draw_head(cv: _Canvas, ident: Identity, fig: _Figure) -> None:
    """Face and hair as seen from ``fig.view``: hair only from the back, eyes from the front or side."""
    f, cx, u, shoulder, head_cy, hry, hrx = fig.facing, fig.cx, fig.u, fig.shoulder, fig.head_cy, fig.hry, fig.hrx
    hair = ident.hair
    long_hair = ident.hair_style == "long"
    if fig.view == "back":
        cv.blob(ident.skin if ident.hair_style == "bald" else hair, head_cy, cx, hry, hrx)
        if long_hair:
            cv.blob(hair, shoulder + 0.02 * u, cx, hry * 1.2, hrx * 0.95, p=4)
    elif fig.view == "front":
        if ident.hair_style != "bald":
            cv.blob(hair, head_cy - hry * 0.1, cx, hry * 0.95, hrx * 1.08)
        cv.blob(ident.skin, head_cy + hry * 0.15, cx, hry * 0.82, hrx * 0.86)
        for s in (-1, 1):
            cv.blob(_DARK + 0.1, head_cy + hry * 0.1, cx + s * hrx * 0.38, max(hry * 0.1, 0.6), max(hrx * 0.12, 0.6))
    else:
        if long_hair:
            cv.blob(hair, head_cy + hry * 0.9, cx - f * hrx * 0.5, hry * 1.1, hrx * 0.55, p=4)
        cv.blob(ident.skin, head_cy, cx + f * hrx * 0.1, hry, hrx * 0.95)
        if ident.hair_style != "bald":
            cv.blob(hair, head_cy - hry * 0.25, cx - f * hrx * 0.2, hry * 0.8, hrx * 0.9)
        cv.blob(_DARK + 0.1, head_cy + hry * 0.05, cx + f * hrx * 0.6, max(hry * 0.1, 0.6), max(hrx * 0.12, 0.6))


def _draw_hat(cv: _Canvas, ident: Identity, fig: _Figure) -> None:
    """A cap in the identity's second colour, its peak pointing the way the person faces in side view."""
    f, cx, side, head_cy, hry, hrx = fig.facing, fig.cx, fig.side, fig.head_cy, fig.hry, fig.hrx
    cv.blob(ident.upper2, head_cy - hry * 0.55, cx, hry * 0.5, hrx * 1.05, p=3)
    cv.blob(ident.upper2 * 0.8, head_cy - hry * 0.2, cx + (f * hrx * 0.4 if side else 0), hry * 0.12,
            hrx * (1.2 if not side else 1.0))


def _draw_person(
    cv: _Canvas, ident: Identity, view: str, facing: int, cx: float, feet: float, u: float,
    stride: float, swing: float,
) -> None:
    """Draw one pedestrian of height ``u`` whose feet touch ``feet``, back to front."""
    fig = _figure(ident, view, facing, cx, feet, u, stride, swing)
    cv.blob(_DARK, feet, cx, 0.025 * u, fig.sw * 1.5, opacity=0.35)  # ground shadow
    _draw_behind_body(cv, ident, fig)
    _draw_legs(cv, ident, fig)
    if not fig.side:
        _draw_arms_beside_torso(cv, ident, fig)
    _draw_torso(cv, ident, fig)
    if ident.bag == "backpack":
        _draw_backpack(cv, ident, fig)
    if ident.bag == "shoulder":
        _draw_shoulder_bag(cv, ident, fig)
    if fig.side:
        _draw_near_arm(cv, ident, fig)
    _draw_head(cv, ident, fig)
    if ident.hair_style == "hat":
        _draw_hat(cv, ident, fig)


def random_prop_colour(rng: np.random.Generator) -> np.ndarray:
    """An RGB parked object's colour: the default :attr:`Occluders.colour`."""
    return _colour(rng, _CLOTHES)


@dataclass(frozen=True)
class Occluders:
    """What a scene's occluders are made of, each drawn from the image's own stream.

    The hook for a renderer that draws more channels than RGB (one canvas channel
    per modality): it supplies passers-by and object colours with as many
    channels as its camera's plate and pole; RGB uses the defaults.
    """

    person: Callable[[np.random.Generator], Identity] = random_identity
    colour: Callable[[np.random.Generator], np.ndarray] = random_prop_colour


_RGB_OCCLUDERS = Occluders()


def _occlude(cv: _Canvas, rng: np.random.Generator, cam: Camera, occluders: Occluders = _RGB_OCCLUDERS) -> None:
    """One partial occluder: a pole, a parked object rising from the bottom, or a passer-by at the edge."""
    h, w = cv.h, cv.w
    kind = rng.choice(3)
    if kind == 0:
        x = rng.uniform(0.1, 0.9) * w
        half = rng.uniform(0.03, 0.07) * w
        cv.trapezoid(cam.pole, -1, h + 1, x, half, half, shade=_cylinder(x, half * 1.3))
    elif kind == 1:
        top = rng.uniform(0.62, 0.85) * h
        colour = occluders.colour(rng)
        left = rng.random() < 0.5
        edge = rng.uniform(0.35, 0.75) * w
        x0, x1 = (-w, edge) if left else (w - edge, 2 * w)
        cv.blob(colour, (top + h) / 2 + h * 0.05, (x0 + x1) / 2, (h - top) / 2 + h * 0.05, (x1 - x0) / 2, p=6)
        cv.trapezoid(colour * 0.6, top + (h - top) * 0.2, top + (h - top) * 0.4, (x0 + x1) / 2, (x1 - x0) / 2,
                     (x1 - x0) / 2)
    else:
        other = occluders.person(rng)
        s = 1 if rng.random() < 0.5 else -1
        cx = w / 2 + s * w * rng.uniform(0.55, 0.75)
        u = h * rng.uniform(0.8, 1.0)
        _draw_person(cv, other, "side", -s, cx, h * rng.uniform(0.95, 1.05), u, rng.uniform(-1, 1), 0.0)


def compose(
    size: tuple[int, int], cam: Camera, ident: Identity, rng: np.random.Generator, junk: bool = False,
    occluders: Occluders = _RGB_OCCLUDERS,
) -> np.ndarray:
    """The scene of one image, before the camera's light, blur and noise: float, as many channels as the plate.

    Draws from ``rng`` before :func:`develop` does; a writer calls both on one stream, in that order, so that
    the same stream gives the same image.
    """
    h, w = size
    x0 = int(rng.integers(0, cam.plate.shape[1] - w + 1))
    cv = _Canvas(cam.plate[:, x0 : x0 + w].copy())
    if rng.random() < cam.view_p:
        view, facing = cam.view
    else:
        others = [v for v in _ALL_VIEWS if v != cam.view]
        view, facing = others[int(rng.integers(len(others)))]
    u = h * cam.scale * ident.height * (1 + rng.normal(0, 0.03))
    feet = h * (0.975 + rng.normal(0, 0.008))
    cx = w * (0.5 + rng.normal(0, 0.04))
    if junk:  # mostly out of frame, or far too close
        if rng.random() < 0.5:
            cx = w * (0.5 + rng.choice((-1, 1)) * rng.uniform(0.55, 0.8))
        else:
            u, feet = u * 2.2, feet + u * 1.1
    _draw_person(cv, ident, view, facing, cx, feet, u, rng.uniform(-1, 1), rng.uniform(-1, 1))
    if rng.random() < cam.occlusion:
        _occlude(cv, rng, cam, occluders)
    return cv.img


def develop(cam: Camera, img: np.ndarray, rng: np.random.Generator, junk: bool = False) -> Image.Image:
    """What the RGB camera makes of a composed (H, W, 3) scene: light, blur, sensor noise, gamma.

    Scales ``img`` in place: the scene is drawn for this one image and never reused.
    """
    h, w = img.shape[:2]
    ys = np.arange(h, dtype=np.float32) + 0.5
    light = cam.gain * (1 + rng.normal(0, 0.07)) * (1 + cam.gradient * (0.5 - ys / h))
    img *= (cam.cast * light[:, None, None]).astype(np.float32)
    sigma = cam.blur * h / 128 + (1.2 if junk else 0.0)
    if sigma > 0.3:
        img = gaussian_blur(img, sigma)
    ny, nx = int(rng.integers(h)), int(rng.integers(w))
    img += cam.noise[ny : ny + h, nx : nx + w]
    return Image.fromarray(cam.lut[(clamp_unit(img) * 1023 + 0.5).astype(np.intp)])


def render(
    size: tuple[int, int], cam: Camera, ident: Identity, rng: np.random.Generator, junk: bool = False
) -> Image.Image:
    """One RGB image of ``ident`` seen by ``cam``; ``junk`` gives a badly framed crop with little of the person."""
    return develop(cam, compose(size, cam, ident, rng, junk), rng, junk)


__all__ = [
    "SCENE_VERSION",
    "Camera",
    "Identity",
    "Occluders",
    "clamp_unit",
    "compose",
    "develop",
    "gamma_lut",
    "gaussian_blur",
    "random_camera",
    "random_identity",
    "random_prop_colour",
    "render",
]
