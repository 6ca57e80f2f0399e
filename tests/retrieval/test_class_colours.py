"""The seven class colours stay apart for every reader, keep the thesis's grouping, and read.

Frames, swatches, vote bars and class buttons carry ``DiagnosticClass.colour``; the rank badge
of a result frame writes ``badge_text`` on it. The colours are compared by CIEDE2000 as seen
with normal vision and as simulated for protanopia, deuteranopia and tritanopia (Machado et al.
2009, severity 1.0, in linear RGB); the helpers are checked against published values first.
"""
from __future__ import annotations

import math
from itertools import combinations
from pathlib import Path

import pytest

from retrieval.classes import BENIGN, BY_CODE, CLASSES, INK, MALIGNANT, PREMALIGNANT
from tests.retrieval import colour_vision as cv

#: The smallest CIEDE2000 allowed between two class colours under any of the four conditions
#: (the palette reaches 11.2; docs/readerstudy.md "Class colours" lists the margins).
MIN_DELTA_E00 = 10.0
ROOT = Path(__file__).resolve().parents[2]


# --- The helpers against published values ---------------------------------------------------

def test_the_machado_matrices_are_the_published_severity_1_0_ones():
    # Machado, Oliveira & Fernandes (2009), supplementary table, severity 1.0, as printed in the
    # DaltonLens documentation (daltonlens.org, "Review of open source color blindness
    # simulations") and colorspacious (cvd.py, machado_et_al_2009_matrices["deuteranomaly"][100]).
    assert cv.MACHADO_2009[cv.DEUTERANOPIA] == (
        (0.367322, 0.860646, -0.227968),
        (0.280085, 0.672501, 0.047413),
        (-0.011820, 0.042940, 0.968881),
    )
    assert cv.MACHADO_2009[cv.PROTANOPIA][0] == (0.152286, 1.052583, -0.204868)
    assert cv.MACHADO_2009[cv.TRITANOPIA][2] == (0.004733, 0.691367, 0.303900)
    for condition, matrix in cv.MACHADO_2009.items():  # rows sum to 1: white and greys stay as they are
        for row in matrix:
            assert sum(row) == pytest.approx(1.0, abs=1e-5)
        for grey in ("#ffffff", "#808080", "#000000"):
            assert cv.to_hex(cv.simulate(grey, condition)) == grey


def test_the_simulation_merges_red_and_green_for_a_dichromat_but_not_for_normal_vision():
    red, green = "#cc3333", "#338833"
    assert cv.difference(red, green) > 50
    assert cv.difference(red, green, cv.DEUTERANOPIA) < cv.difference(red, green) / 3
    assert cv.difference(red, green, cv.PROTANOPIA) < cv.difference(red, green) / 3
    # Pure sRGB red under deuteranopia (linear [1, 0, 0] -> the matrix's first column, clipped).
    r, g, b = cv.simulate("#ff0000", cv.DEUTERANOPIA)
    assert (r, g, b) == pytest.approx(tuple(cv.linear_to_srgb(max(0.0, c)) for c in (0.367322, 0.280085, -0.011820)))


# Sharma, Wu & Dalal (2005), Table 1: pairs 1, 7, 10, 14, 16, 19, 25, 31 and 34 (L*, a*, b*; ΔE00).
SHARMA_2005 = [
    ((50.0000, 2.6772, -79.7751), (50.0000, 0.0000, -82.7485), 2.0425),
    ((50.0000, 0.0000, 0.0000), (50.0000, -1.0000, 2.0000), 2.3669),
    ((50.0000, 2.4900, -0.0010), (50.0000, -2.4900, 0.0012), 7.2195),
    ((50.0000, -0.0010, 2.4900), (50.0000, 0.0011, -2.4900), 4.7461),
    ((50.0000, 2.5000, 0.0000), (50.0000, 0.0000, -2.5000), 4.3065),
    ((50.0000, 2.5000, 0.0000), (56.0000, -27.0000, -3.0000), 31.9030),
    ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
    ((22.7233, 20.0904, -46.6940), (23.0331, 14.9730, -42.5619), 2.0373),
    ((2.0776, 0.0795, -1.1350), (0.9033, -0.0636, -0.5514), 0.9082),
]


@pytest.mark.parametrize("lab1, lab2, expected", SHARMA_2005)
def test_ciede2000_reproduces_sharma_wu_dalal_2005(lab1, lab2, expected):
    assert cv.delta_e_2000(lab1, lab2) == pytest.approx(expected, abs=5e-5)
    assert cv.delta_e_2000(lab2, lab1) == pytest.approx(expected, abs=5e-5)


def test_cielab_and_wcag_reference_values():
    assert cv.to_lab("#ffffff") == pytest.approx((100.0, 0.0, 0.0), abs=0.01)
    assert cv.to_lab("#ff0000") == pytest.approx((53.24, 80.09, 67.20), abs=0.02)  # sRGB red, D65
    assert cv.delta_e_76((50, 0, 0), (53, 4, 0)) == pytest.approx(5.0)
    assert cv.contrast_ratio("#000000", "#ffffff") == pytest.approx(21.0)
    assert cv.contrast_ratio("#777777", "#ffffff") == pytest.approx(4.48, abs=0.005)
    assert cv.hsl("#00ff00")[0] == pytest.approx(120.0) and cv.hsl("#ff8000")[0] == pytest.approx(30.1, abs=0.1)


# --- The palette ------------------------------------------------------------------------------

@pytest.mark.parametrize("condition", cv.CONDITIONS)
def test_no_two_class_colours_are_close_under_any_colour_vision(condition):
    palette = {c.code: c.colour for c in CLASSES}
    too_close = [(round(cv.difference(palette[x], palette[y], condition), 2), x, y)
                 for x, y in combinations(palette, 2)
                 if cv.difference(palette[x], palette[y], condition) < MIN_DELTA_E00]
    assert not too_close, f"class colours closer than ΔE00 {MIN_DELTA_E00} under {condition}: {too_close}"


def test_the_grouping_of_the_thesis_holds():
    assert {c.code for c in CLASSES if c.group == BENIGN} == {"bkl", "df", "nv", "vasc"}
    assert {c.code for c in CLASSES if c.group == MALIGNANT} == {"bcc", "mel"}
    assert {c.code for c in CLASSES if c.group == PREMALIGNANT} == {"akiec"}
    for c in CLASSES:
        hue, saturation, _ = cv.hsl(c.colour)
        _, chroma, lch_hue = cv.lch(c.colour)
        assert saturation >= 0.45 and chroma >= 30, f"{c.code} {c.colour} is too grey to carry its hue"
        if c.group == BENIGN:  # the green family: yellow-green to blue-green
            assert 75 <= hue <= 175 and 100 <= lch_hue <= 200, (c.code, c.colour, hue, lch_hue)
        elif c.group == MALIGNANT:  # the red family: crimson to scarlet
            assert (hue >= 330 or hue <= 12) and (lch_hue >= 340 or lch_hue <= 40), (c.code, c.colour, hue, lch_hue)
        else:  # orange
            assert 20 <= hue <= 45 and 45 <= lch_hue <= 80, (c.code, c.colour, hue, lch_hue)
    # Melanoma the reddest of the reds (the thesis's red), not the crimson of bcc.
    assert math.cos(math.radians(cv.hsl(BY_CODE["mel"].colour)[0])) > math.cos(math.radians(cv.hsl(BY_CODE["bcc"].colour)[0]))


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.code)
def test_each_colour_reads_on_the_page_and_under_its_badge_text(cls):
    assert cls.badge_text in ("#ffffff", INK)
    # WCAG 1.4.3 (text, 4.5:1): the rank badge's text on the class colour.
    assert cv.contrast_ratio(cls.badge_text, cls.colour) >= 4.5, (cls.code, cls.colour, cls.badge_text)
    # WCAG 1.4.11 (graphics, 3:1): frames, swatches and bars against the white page.
    assert cv.contrast_ratio(cls.colour, "#ffffff") >= 3.0, (cls.code, cls.colour)


def test_every_neighbour_frame_shows_its_class_code_and_the_badge_uses_the_badge_text():
    result = (ROOT / "templates/retrieval/_neighbour.html").read_text()
    assert 'data-slot="code">{{ n.diagnosis }}</strong>' in result
    assert "--c: {{ n.cls.colour }}; --c-text: {{ n.cls.badge_text }}" in result
    script = (ROOT / "static/js/query.js").read_text()
    assert 'setProperty("--c-text", cls ? cls.badge_text' in script
    study = (ROOT / "templates/readerstudy/task_case.html").read_text()
    frame = study[study.index('<figure class="framed">'):study.index("</figure>", study.index('<figure class="framed">'))]
    assert '<span class="code">{{ n.code }}</span>' in frame and '<span class="rank">#{{ n.rank }}</span>' in frame
    css = (ROOT / "static/css/lesionsearch.css").read_text()
    assert ".n-title .rank { font-weight: 700; background: var(--c); color: var(--c-text, #fff);" in css
