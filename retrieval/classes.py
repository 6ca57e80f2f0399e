"""The seven HAM10000 diagnostic classes: stored codes (never change), labels and colours.

Colours follow the thesis's scheme (green benign, orange pre-malignant, red malignant), with a
distinct shade per class so that seven class buttons and frames stay distinguishable, also
for colour-blind readers: every two colours differ by a CIEDE2000 of at least 10 for normal
vision and under simulated protanopia, deuteranopia and tritanopia (Machado et al. 2009,
severity 1.0), each has a 3:1 contrast against the white page (frames, swatches, bars) and
``badge_text`` reads on it at 4.5:1 (the rank badge of a result frame). The check and the
measured margins: tests/retrieval/test_class_colours.py, docs/readerstudy.md ("Class colours").
"""
from __future__ import annotations

from dataclasses import dataclass

BENIGN = "benign"
PREMALIGNANT = "pre-malignant"
MALIGNANT = "malignant"

#: The page's text colour (static/css/lesionsearch.css --ink), for badges on the light class colours.
INK = "#1d2430"


@dataclass(frozen=True)
class DiagnosticClass:
    code: str
    label: str
    group: str
    colour: str
    definition: str
    #: the text colour on ``colour`` (white on the dark shades, the page's ink on the light ones)
    badge_text: str = "#ffffff"


CLASSES: tuple[DiagnosticClass, ...] = (
    DiagnosticClass(
        "akiec", "Actinic keratosis / Bowen's disease", PREMALIGNANT, "#d77d00",
        "Actinic keratoses and intraepithelial carcinoma (Bowen's disease): scaly, often pink "
        "or red lesions on sun-damaged skin; usually benign but may progress to squamous cell carcinoma.",
        badge_text=INK,
    ),
    DiagnosticClass(
        "bcc", "Basal cell carcinoma", MALIGNANT, "#7d194b",
        "The most common skin cancer; rarely metastasises but grows destructively. Dermoscopy: "
        "arborising vessels, blue-grey ovoid nests, leaf-like areas, ulceration.",
    ),
    DiagnosticClass(
        "bkl", "Benign keratosis", BENIGN, "#284b00",
        "Seborrhoeic keratoses, solar lentigines and lichen-planus-like keratoses: sharply "
        "demarcated, 'stuck-on', with milia-like cysts, comedo-like openings and fissures.",
    ),
    DiagnosticClass(
        "df", "Dermatofibroma", BENIGN, "#23a591",
        "A benign fibrous skin lesion: a delicate peripheral pigment network around a central white scar-like patch.",
        badge_text=INK,
    ),
    DiagnosticClass(
        "mel", "Melanoma", MALIGNANT, "#d7323c",
        "Malignant neoplasm of melanocytes. Dermoscopy: asymmetry, irregular borders, several "
        "colours, atypical network, irregular dots and globules, blue-white veil, regression.",
    ),
    DiagnosticClass(
        "nv", "Melanocytic nevus", BENIGN, "#466e14",
        "Benign neoplasm of melanocytes (moles): symmetric, regular network or globules, one or two colours.",
    ),
    DiagnosticClass(
        "vasc", "Vascular lesion", BENIGN, "#1e8269",
        "Cherry angiomas, angiokeratomas, pyogenic granulomas and haemorrhage: red-purple lacunae.",
    ),
)

CODES: tuple[str, ...] = tuple(c.code for c in CLASSES)
BY_CODE: dict[str, DiagnosticClass] = {c.code: c for c in CLASSES}
DX_CHOICES = [(c.code, c.label) for c in CLASSES]

#: How the diagnosis was established (HAM10000 ``dx_type``): the codes a labels CSV may state.
STATED_DX_TYPE_CHOICES = [
    ("histo", "Histopathology"),
    ("follow_up", "Follow-up examination"),
    ("consensus", "Expert consensus"),
    ("confocal", "In-vivo confocal microscopy"),
]
DX_TYPES = tuple(code for code, _ in STATED_DX_TYPE_CHOICES)
#: ISIC imports only (``retrieval.isic``): the archive's "single contributor clinical assessment",
#: and rows that do not say (the 2019 challenge files never do; an archive row may leave it empty).
DX_TYPE_CLINICAL, DX_TYPE_UNKNOWN = "clinical", "unknown"
DX_TYPE_CHOICES = STATED_DX_TYPE_CHOICES + [
    (DX_TYPE_CLINICAL, "Clinical assessment (single contributor)"),
    (DX_TYPE_UNKNOWN, "Not stated by the source"),
]

SEX_CHOICES = [("male", "Male"), ("female", "Female"), ("unknown", "Unknown")]
SEXES = tuple(code for code, _ in SEX_CHOICES)

TRAIN, VAL, TEST, NO_SPLIT = "train", "val", "test", "none"
SPLIT_CHOICES = [(TRAIN, "Training"), (VAL, "Validation"), (TEST, "Test"), (NO_SPLIT, "Not assigned")]
