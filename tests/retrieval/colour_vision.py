"""Colour-vision helpers for the class-colour checks (a helper module, not a test module).

Pure functions, standard library only:

* sRGB <-> linear RGB (IEC 61966-2-1 transfer function), CIE XYZ (D65) and CIELAB;
* colour-vision-deficiency simulation by Machado, Oliveira & Fernandes (2009), "A
  Physiologically-based Model for Simulation of Color Vision Deficiency", IEEE TVCG 15(6),
  1291-1298, at severity 1.0 (protanopia, deuteranopia, tritanopia), applied in linear RGB:
  sRGB -> linear, matrix, clip to [0, 1], -> sRGB;
* colour differences CIE76 and CIEDE2000 (Sharma, Wu & Dalal 2005, "The CIEDE2000
  Color-Difference Formula: Implementation Notes, Supplementary Test Data, and Mathematical
  Observations", Color Res. Appl. 30(1), 21-30);
* WCAG 2.x relative luminance and contrast ratio; HSL and LCh(ab) hues.

Colours are '#rrggbb' strings or (r, g, b) tuples of floats in [0, 1] (sRGB).
"""
from __future__ import annotations

import math
from itertools import combinations

RGB = tuple[float, float, float]
Lab = tuple[float, float, float]

NORMAL = "normal"
PROTANOPIA = "protanopia"
DEUTERANOPIA = "deuteranopia"
TRITANOPIA = "tritanopia"
CONDITIONS = (NORMAL, PROTANOPIA, DEUTERANOPIA, TRITANOPIA)

# Machado et al. (2009), severity 1.0, for linear RGB. The values are those of the authors'
# supplementary table ("Matrices for simulating ... severity 1.0"), as reproduced in
# colorspacious (colorspacious/cvd.py, machado_et_al_2009_matrices[...][100]) and in the
# DaltonLens documentation (https://daltonlens.org/opensource-cvd-simulation/); e.g. the
# deuteranopia rows [0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413],
# [-0.011820, 0.042940, 0.968881]. tests/retrieval/test_class_colours.py checks them.
MACHADO_2009: dict[str, tuple[RGB, RGB, RGB]] = {
    PROTANOPIA: (
        (0.152286, 1.052583, -0.204868),
        (0.114503, 0.786281, 0.099216),
        (-0.003882, -0.048116, 1.051998),
    ),
    DEUTERANOPIA: (
        (0.367322, 0.860646, -0.227968),
        (0.280085, 0.672501, 0.047413),
        (-0.011820, 0.042940, 0.968881),
    ),
    TRITANOPIA: (
        (1.255528, -0.076749, -0.178779),
        (-0.078411, 0.930809, 0.147602),
        (0.004733, 0.691367, 0.303900),
    ),
}

# sRGB (D65) linear RGB -> XYZ, and the D65 white (Y = 1).
_RGB_TO_XYZ = (
    (0.4124564, 0.3575761, 0.1804375),
    (0.2126729, 0.7151522, 0.0721750),
    (0.0193339, 0.1191920, 0.9503041),
)
_WHITE_D65 = (0.95047, 1.0, 1.08883)


def parse(colour: str | RGB) -> RGB:
    """'#466e14' (or '466e14', '#abc') -> (r, g, b) in [0, 1]; tuples pass through."""
    if not isinstance(colour, str):
        r, g, b = colour
        return float(r), float(g), float(b)
    value = colour.strip().lstrip("#")
    if len(value) == 3:
        value = "".join(ch * 2 for ch in value)
    if len(value) != 6:
        raise ValueError(f"not a #rrggbb colour: {colour!r}")
    return tuple(int(value[i:i + 2], 16) / 255 for i in (0, 2, 4))  # type: ignore[return-value]


def to_hex(rgb: RGB) -> str:
    return "#" + "".join(f"{round(min(1.0, max(0.0, c)) * 255):02x}" for c in rgb)


def srgb_to_linear(c: float) -> float:
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def linear_to_srgb(c: float) -> float:
    return 12.92 * c if c <= 0.0031308 else 1.055 * c ** (1 / 2.4) - 0.055


def _mul(matrix, vector) -> RGB:
    return tuple(sum(m * v for m, v in zip(row, vector)) for row in matrix)  # type: ignore[return-value]


def simulate(colour: str | RGB, condition: str) -> RGB:
    """The sRGB colour a dichromat of ``condition`` sees (Machado 2009, severity 1.0)."""
    rgb = parse(colour)
    if condition == NORMAL:
        return rgb
    linear = [srgb_to_linear(c) for c in rgb]
    seen = _mul(MACHADO_2009[condition], linear)
    return tuple(linear_to_srgb(min(1.0, max(0.0, c))) for c in seen)  # type: ignore[return-value]


def to_lab(colour: str | RGB) -> Lab:
    """sRGB -> CIELAB (D65 white, 2 degree observer)."""
    linear = [srgb_to_linear(c) for c in parse(colour)]
    xyz = _mul(_RGB_TO_XYZ, linear)

    def f(t: float) -> float:
        return t ** (1 / 3) if t > (6 / 29) ** 3 else t / (3 * (6 / 29) ** 2) + 4 / 29

    fx, fy, fz = (f(v / w) for v, w in zip(xyz, _WHITE_D65))
    return 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)


def delta_e_76(lab1: Lab, lab2: Lab) -> float:
    return math.dist(lab1, lab2)


def delta_e_2000(lab1: Lab, lab2: Lab, kl: float = 1.0, kc: float = 1.0, kh: float = 1.0) -> float:
    """CIEDE2000 colour difference, following Sharma, Wu & Dalal (2005), equations 1-20."""
    l1, a1, b1 = lab1
    l2, a2, b2 = lab2
    c_bar = (math.hypot(a1, b1) + math.hypot(a2, b2)) / 2
    g = 0.5 * (1 - math.sqrt(c_bar ** 7 / (c_bar ** 7 + 25 ** 7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = math.hypot(a1p, b1), math.hypot(a2p, b2)
    h1p = math.degrees(math.atan2(b1, a1p)) % 360 if c1p else 0.0
    h2p = math.degrees(math.atan2(b2, a2p)) % 360 if c2p else 0.0

    dlp = l2 - l1
    dcp = c2p - c1p
    if c1p * c2p == 0:
        dhp = 0.0
    else:
        dhp = h2p - h1p
        if dhp > 180:
            dhp -= 360
        elif dhp < -180:
            dhp += 360
    dHp = 2 * math.sqrt(c1p * c2p) * math.sin(math.radians(dhp / 2))

    lp_bar = (l1 + l2) / 2
    cp_bar = (c1p + c2p) / 2
    if c1p * c2p == 0:
        hp_bar = h1p + h2p
    elif abs(h1p - h2p) <= 180:
        hp_bar = (h1p + h2p) / 2
    elif h1p + h2p < 360:
        hp_bar = (h1p + h2p + 360) / 2
    else:
        hp_bar = (h1p + h2p - 360) / 2

    t = (1 - 0.17 * math.cos(math.radians(hp_bar - 30)) + 0.24 * math.cos(math.radians(2 * hp_bar))
         + 0.32 * math.cos(math.radians(3 * hp_bar + 6)) - 0.20 * math.cos(math.radians(4 * hp_bar - 63)))
    d_theta = 30 * math.exp(-(((hp_bar - 275) / 25) ** 2))
    rc = 2 * math.sqrt(cp_bar ** 7 / (cp_bar ** 7 + 25 ** 7))
    sl = 1 + 0.015 * (lp_bar - 50) ** 2 / math.sqrt(20 + (lp_bar - 50) ** 2)
    sc = 1 + 0.045 * cp_bar
    sh = 1 + 0.015 * cp_bar * t
    rt = -math.sin(math.radians(2 * d_theta)) * rc
    return math.sqrt((dlp / (kl * sl)) ** 2 + (dcp / (kc * sc)) ** 2 + (dHp / (kh * sh)) ** 2
                     + rt * (dcp / (kc * sc)) * (dHp / (kh * sh)))


def difference(colour1: str | RGB, colour2: str | RGB, condition: str = NORMAL) -> float:
    """CIEDE2000 between two sRGB colours as seen under ``condition``."""
    return delta_e_2000(to_lab(simulate(colour1, condition)), to_lab(simulate(colour2, condition)))


def closest_pair(colours: dict[str, str], condition: str = NORMAL) -> tuple[float, str, str]:
    """(smallest CIEDE2000, name, name) over all pairs of ``colours`` under ``condition``."""
    return min((difference(colours[x], colours[y], condition), x, y) for x, y in combinations(colours, 2))


def relative_luminance(colour: str | RGB) -> float:
    """WCAG 2.x relative luminance."""
    r, g, b = (srgb_to_linear(c) for c in parse(colour))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast_ratio(colour1: str | RGB, colour2: str | RGB) -> float:
    """WCAG 2.x contrast ratio, 1 to 21."""
    high, low = sorted((relative_luminance(colour1), relative_luminance(colour2)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def hsl(colour: str | RGB) -> tuple[float, float, float]:
    """(hue in degrees [0, 360), saturation, lightness) of an sRGB colour."""
    r, g, b = parse(colour)
    high, low = max(r, g, b), min(r, g, b)
    lightness = (high + low) / 2
    span = high - low
    if span == 0:
        return 0.0, 0.0, lightness
    saturation = span / (1 - abs(2 * lightness - 1))
    if high == r:
        hue = ((g - b) / span) % 6
    elif high == g:
        hue = (b - r) / span + 2
    else:
        hue = (r - g) / span + 4
    return (60 * hue) % 360, saturation, lightness


def lch(colour: str | RGB) -> tuple[float, float, float]:
    """CIE LCh(ab): (L*, C*ab, hab in degrees [0, 360))."""
    lightness, a, b = to_lab(colour)
    return lightness, math.hypot(a, b), math.degrees(math.atan2(b, a)) % 360
