"""The PDF report of a finished query: pure rendering with reportlab (no browser, no Django, no ORM).

``render_query_report`` takes a :class:`QueryReport` (what to print, with the image bytes) and
returns the PDF's bytes. The data is gathered by ``retrieval.selectors.query_report_data`` and the
PDF handed out by ``retrieval.services.reports.query_report_export``, which writes the audit event.

What the report holds is what the result page shows a clinician: the query image and its saliency
overlay, the similar cases framed in their class colours with diagnosis, similarity and metadata,
the neighbour vote (never as a diagnosis), the out-of-distribution warning, the model and index
versions and dates, and the attribution of every library image shown. It holds no patient
identifier: not the library cases' ``patient_id`` nor the upload's file name (often the patient's).
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import datetime
from xml.sax.saxutils import escape

from PIL import Image, UnidentifiedImageError
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.lib.utils import ImageReader
from reportlab.platypus import (Flowable, KeepTogether, Paragraph, SimpleDocTemplate, Spacer, Table,
                                TableStyle)

#: How the page's own opacity slider starts (static/js/query.js): the overlay over the photograph.
OVERLAY_OPACITY = 0.6
#: Longest side, in pixels, of an image as embedded: sharp at the printed size (about 7 cm at
#: 300 dpi) and it keeps a report of eight images well under a few megabytes.
EMBED_MAX_SIDE = 800
JPEG_QUALITY = 90
#: Width of a similar case's frame in its class colour (points): a frame as on the result page.
FRAME_WIDTH = 4
NEIGHBOURS_PER_ROW = 3
#: The query image and its overlay side by side, beside the vote; a similar case's image is about as large.
QUERY_IMAGE_WIDTH = 50 * mm
MARGIN = 15 * mm
NOT_A_DIAGNOSIS = "not a diagnosis"
FOOTER = ("LesionSearch query #{id} - page {page}. The similar cases and the neighbour vote support a clinician's "
          "judgement; they are not a diagnosis.")


class ReportUnavailable(ValueError):
    """The report cannot be made now; ``code``: not_ready, query_failed, image_missing or
    image_unreadable. The web layer answers 409 with the code and the message."""

    status_code = 409

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class VoteRow:
    """One class of the neighbour vote, in the stored vote's order (the winner first)."""

    code: str
    label: str
    colour: str
    count: int
    n: int
    percent: int


@dataclass(frozen=True)
class ReportNeighbour:
    rank: int
    image_id: str
    diagnosis: str
    diagnosis_label: str
    colour: str
    similarity: float
    age: int | None
    sex: str
    localization: str
    diagnosis_type: str
    image: bytes
    attribution: str = ""
    copyright_license: str = ""
    withdrawn_reason: str = ""  # set when the case was withdrawn from the library since the search


@dataclass(frozen=True)
class QueryReport:
    query_id: int
    created: datetime
    finished: datetime | None
    generated: datetime
    method_label: str
    model_version: str
    index_version: str
    image: bytes
    saliency: bytes | None
    vote_note: str
    vote: list[VoteRow] = field(default_factory=list)
    neighbours: list[ReportNeighbour] = field(default_factory=list)
    warning: str = ""
    restriction: str = ""  # how the neighbours were filtered (retrieval.selectors.search_filter_text)


def render_query_report(report: QueryReport) -> bytes:
    """The PDF (A4) of ``report``. ReportUnavailable ``image_unreadable`` when an image cannot be decoded."""
    styles = _styles()
    buffer = io.BytesIO()
    document = SimpleDocTemplate(buffer, pagesize=A4, leftMargin=MARGIN, rightMargin=MARGIN, topMargin=MARGIN,
                                 bottomMargin=MARGIN + 6 * mm, title=f"LesionSearch query #{report.query_id}",
                                 author="LesionSearch", subject="Similar diagnosed cases of a dermoscopic image")
    width = A4[0] - 2 * MARGIN
    story: list[Flowable] = [
        Paragraph(f"LesionSearch - similar-case report, query #{report.query_id}", styles["Title"]),
        _facts_table(report, styles, width),
        Spacer(1, 3 * mm),
    ]
    if report.warning:
        story += [_warning_box(report.warning, styles, width), Spacer(1, 1 * mm)]
    if report.restriction:
        story += [Paragraph(_text(report.restriction), styles["Body"]), Spacer(1, 1 * mm)]
    story += [_top_section(report, styles, width), Spacer(1, 1 * mm)]
    story += _neighbour_section(report, styles, width)
    story += _attribution_section(report, styles)

    def footer(canvas, doc):
        canvas.saveState()
        canvas.setFont("Helvetica", 7.5)
        canvas.setFillColor(colors.HexColor("#555555"))
        canvas.drawString(MARGIN, MARGIN / 2, FOOTER.format(id=report.query_id, page=doc.page))
        canvas.restoreState()

    document.build(story, onFirstPage=footer, onLaterPages=footer)
    return buffer.getvalue()


# --- Parts ----------------------------------------------------------------------------------

def _styles() -> dict[str, ParagraphStyle]:
    sheet = getSampleStyleSheet()
    return {
        "Title": ParagraphStyle("title", parent=sheet["Title"], fontSize=16, leading=20, alignment=0,
                                spaceAfter=6),
        "Heading": ParagraphStyle("heading", parent=sheet["Heading2"], fontSize=12, leading=15, spaceBefore=6,
                                  spaceAfter=4),
        "Body": ParagraphStyle("body", parent=sheet["BodyText"], fontSize=9, leading=11.5),
        "Small": ParagraphStyle("small", parent=sheet["BodyText"], fontSize=7.5, leading=9.5),
        "Warning": ParagraphStyle("warning", parent=sheet["BodyText"], fontSize=9.5, leading=12,
                                  textColor=colors.HexColor("#5a3200")),
    }


def _text(value) -> str:
    """Plain text as reportlab paragraph markup (its mini-HTML): <, > and & escaped."""
    return escape(str(value))


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M %Z").strip() if moment else "-"


def _facts_table(report: QueryReport, styles, width: float) -> Table:
    facts = [
        ("Query submitted", _when(report.created)), ("Model version", report.model_version),
        ("Search finished", _when(report.finished)), ("Index version", report.index_version),
        ("Similarity measure", report.method_label), ("Report generated", _when(report.generated)),
    ]
    cells = [Paragraph(f"<b>{_text(label)}</b>" if i % 2 == 0 else _text(value), styles["Body"])
             for label, value in facts for i in (0, 1)]
    rows = [cells[i:i + 4] for i in range(0, len(cells), 4)]  # two facts a row: the first page holds all six cases
    label = 32 * mm
    table = Table(rows, colWidths=[label, width / 2 - label, label, width / 2 - label], hAlign="LEFT")
    table.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("BOTTOMPADDING", (0, 0), (-1, -1), 1),
                               ("TOPPADDING", (0, 0), (-1, -1), 1), ("LEFTPADDING", (0, 0), (-1, -1), 0)]))
    return table


def _warning_box(warning: str, styles, width: float) -> Table:
    box = Table([[Paragraph(f"<b>Caution:</b> {_text(warning)}", styles["Warning"])]], colWidths=[width])
    box.setStyle(TableStyle([("BOX", (0, 0), (-1, -1), 1.5, colors.HexColor("#d77d00")),
                             ("BACKGROUND", (0, 0), (-1, -1), colors.HexColor("#fff3e0")),
                             ("LEFTPADDING", (0, 0), (-1, -1), 6), ("RIGHTPADDING", (0, 0), (-1, -1), 6),
                             ("TOPPADDING", (0, 0), (-1, -1), 5), ("BOTTOMPADDING", (0, 0), (-1, -1), 5)]))
    return box


def _top_section(report: QueryReport, styles, width: float) -> Table:
    """The query image, its overlay and the neighbour vote in one row (so that the six similar
    cases fit below them on the first page)."""
    photo = _decoded(report.image, "the query image")
    side = QUERY_IMAGE_WIDTH
    image = [Paragraph("Your image", styles["Heading"]), _Picture(photo, side, side * 0.75)]
    if report.saliency is not None:
        overlay = _decoded(report.saliency, "the saliency overlay", mode="RGBA")
        overlaid = [Paragraph("Saliency overlay", styles["Heading"]),
                    _Picture(_overlaid(photo, overlay), side, side * 0.75),
                    Paragraph("The pixels the model's decision depends on most (bright = more).", styles["Small"])]
    else:
        overlaid = [Paragraph("Saliency overlay", styles["Heading"]),
                    Paragraph("No saliency overlay was stored for this query.", styles["Small"])]
    column = side + 4 * mm
    table = Table([[image, overlaid, _vote_panel(report, styles, width - 2 * column)]],
                  colWidths=[column, column, width - 2 * column], hAlign="LEFT")
    table.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 0),
                               ("RIGHTPADDING", (0, 0), (-1, -1), 0)]))
    return table


def _vote_panel(report: QueryReport, styles, width: float) -> list[Flowable]:
    heading = Paragraph(f"Neighbour vote ({NOT_A_DIAGNOSIS})", styles["Heading"])
    note = Paragraph(_text(report.vote_note), styles["Small"])
    if not report.vote:
        return [heading, Paragraph("No similar cases were found.", styles["Small"]), note]
    rows = [["", Paragraph(f"<b>{_text(row.code)}</b> {_text(row.label)}", styles["Small"]),
             f"{row.count} of {row.n}", f"{row.percent} %"] for row in report.vote]
    table = Table(rows, colWidths=[4 * mm, width - 29 * mm, 13 * mm, 12 * mm], hAlign="LEFT")
    style = [("VALIGN", (0, 0), (-1, -1), "MIDDLE"), ("FONTSIZE", (0, 0), (-1, -1), 7.5),
             ("ALIGN", (2, 0), (-1, -1), "RIGHT"), ("TOPPADDING", (0, 0), (-1, -1), 1),
             ("BOTTOMPADDING", (0, 0), (-1, -1), 1), ("LEFTPADDING", (1, 0), (-1, -1), 3),
             ("RIGHTPADDING", (0, 0), (-1, -1), 0)]
    style += [("BACKGROUND", (0, i), (0, i), colors.HexColor(row.colour)) for i, row in enumerate(report.vote)]
    table.setStyle(TableStyle(style))
    return [heading, table, Spacer(1, 1.5 * mm), note]


def _neighbour_section(report: QueryReport, styles, width: float) -> list[Flowable]:
    heading = Paragraph("Most similar diagnosed cases", styles["Heading"])
    intro = Paragraph(f"Ordered by rank (1 = most similar) by the similarity measure {_text(report.method_label)}. "
                      "Each frame has the colour of the case's class.", styles["Body"])
    if not report.neighbours:
        return [heading, Paragraph("No similar cases were found.", styles["Body"])]
    cell = width / NEIGHBOURS_PER_ROW
    cards = [_neighbour_card(n, styles, cell - 4 * mm) for n in report.neighbours]
    rows = [cards[i:i + NEIGHBOURS_PER_ROW] for i in range(0, len(cards), NEIGHBOURS_PER_ROW)]
    rows[-1] += [""] * (NEIGHBOURS_PER_ROW - len(rows[-1]))
    grid = Table(rows, colWidths=[cell] * NEIGHBOURS_PER_ROW, hAlign="LEFT")
    grid.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 2 * mm),
                              ("RIGHTPADDING", (0, 0), (-1, -1), 2 * mm), ("BOTTOMPADDING", (0, 0), (-1, -1), 2.5 * mm),
                              ("TOPPADDING", (0, 0), (-1, -1), 1 * mm)]))
    return [KeepTogether([heading, intro, Spacer(1, 2 * mm), grid])]


def _neighbour_card(n: ReportNeighbour, styles, width: float) -> list[Flowable]:
    age = "unknown" if n.age is None else f"{n.age} years"
    picture = _Picture(_decoded(n.image, f"the library image of rank {n.rank}"), width, width * 0.75,
                       frame=n.colour)
    return [
        picture,
        Spacer(1, 1.5 * mm),
        Paragraph(f"<b>#{n.rank} {_text(n.diagnosis)}</b> {_text(n.diagnosis_label)}", styles["Body"]),
        Paragraph(f"Similarity <b>{n.similarity:.3f}</b>", styles["Body"]),
        Paragraph(f"Age {_text(age)} · Sex {_text(n.sex)} · Site {_text(n.localization)}<br/>"
                  f"Diagnosis by {_text(n.diagnosis_type)} · Image {_text(n.image_id)}", styles["Small"]),
        *([Paragraph(f"<b>Withdrawn from the library since this search:</b> {_text(n.withdrawn_reason)}",
                     styles["Small"])] if n.withdrawn_reason else []),
    ]


def _attribution_section(report: QueryReport, styles) -> list[Flowable]:
    lines = []
    for n in report.neighbours:
        parts = [part for part in (n.attribution, f"licence {n.copyright_license}" if n.copyright_license else "")
                 if part]
        if parts:
            lines.append(Paragraph(f"Rank {n.rank} (image {_text(n.image_id)}): {_text('; '.join(parts))}",
                                   styles["Small"]))
    if not lines:
        return []
    return [KeepTogether([Paragraph("Image attribution", styles["Heading"]), *lines])]


# --- Images ---------------------------------------------------------------------------------

def _decoded(data: bytes, what: str, *, mode: str = "RGB") -> Image.Image:
    """The image in ``data``, decoded and scaled down to ``EMBED_MAX_SIDE``; ReportUnavailable when it
    cannot be decoded (a stored file damaged since it was checked)."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ReportUnavailable(f"The report cannot be made: {what} cannot be read ({exc}).",
                                "image_unreadable") from exc
    image = image.convert(mode)
    image.thumbnail((EMBED_MAX_SIDE, EMBED_MAX_SIDE))
    return image


def _overlaid(photo: Image.Image, overlay: Image.Image) -> Image.Image:
    """The overlay (RGBA, the image's aspect ratio) laid over the photograph at the page's opacity."""
    overlay = overlay.resize(photo.size, Image.BILINEAR)
    alpha = overlay.getchannel("A").point(lambda a: round(a * OVERLAY_OPACITY))
    combined = photo.copy()
    combined.paste(overlay.convert("RGB"), (0, 0), alpha)
    return combined


class _Picture(Flowable):
    """An image fitted (aspect kept) into a box of ``width`` x ``height`` points, optionally framed."""

    def __init__(self, image: Image.Image, width: float, height: float, *, frame: str | None = None) -> None:
        super().__init__()
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=JPEG_QUALITY)  # photographs: JPEG keeps the PDF small
        self.reader = ImageReader(io.BytesIO(buffer.getvalue()))
        scale = min(width / image.width, height / image.height)
        self.draw_width, self.draw_height = image.width * scale, image.height * scale
        self.box_width, self.box_height = width, height
        self.frame = frame

    def wrap(self, available_width, available_height):
        return self.box_width, self.box_height

    def draw(self):
        x = (self.box_width - self.draw_width) / 2
        y = self.box_height - self.draw_height
        self.canv.drawImage(self.reader, x, y, self.draw_width, self.draw_height)
        if self.frame:
            inset = FRAME_WIDTH / 2  # the stroke is centred on the path: the frame covers the image's edge
            self.canv.setStrokeColor(colors.HexColor(self.frame))
            self.canv.setLineWidth(FRAME_WIDTH)
            self.canv.rect(x + inset, y + inset, self.draw_width - FRAME_WIDTH, self.draw_height - FRAME_WIDTH,
                           stroke=1, fill=0)
