"""A reader's study in Chromium: Task 1 by keyboard and by mouse, a reload mid-task, the washout
page, Task 2 with the six framed neighbours and the rotated image, the help window, the study
administrator's dashboard; layout, colours, focus and names at laptop and tablet widths."""
from __future__ import annotations

import io
import re
import time
from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone
from PIL import Image
from playwright.sync_api import expect

from readerstudy.models import LIKERT_CHOICES, Answer, AssignedCase, Assignment, NeighbourView, StudyNeighbour
from retrieval.classes import BY_CODE, CLASSES
# The reader-study scenario fixtures (a study prepared on the tiny real index, three readers).
from tests.browser.conftest import LAPTOP, TABLET, rgb, sign_in
from tests.readerstudy.conftest import make_study, open_study, readers, study_index  # noqa: F401

# serialized_rollback: the roles (groups) come from a data migration that a transactional flush removes.
pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True, serialized_rollback=True)]

LAPTOP_IN_BROWSER = {"width": 1366, "height": 650}
KEYS = {"akiec": "a", "bcc": "b", "bkl": "k", "df": "d", "mel": "m", "nv": "n", "vasc": "v"}


def no_horizontal_overflow(page) -> None:
    widths = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert widths[0] <= widths[1], f"the page scrolls sideways: {widths}"


def every_control_is_named(page) -> None:
    controls = page.locator("input:not([type=hidden]), button, select, textarea").filter(visible=True)
    assert controls.count() > 0
    for i in range(controls.count()):
        expect(controls.nth(i)).to_have_accessible_name(re.compile(r"\S"))


def box(locator) -> dict:
    found = locator.bounding_box()
    assert found, f"{locator} is not rendered"
    return found


def bottom(locator) -> float:
    found = box(locator)
    return found["y"] + found["height"]


def progress(page, position: int, answered: int, total: int = 5) -> None:
    expect(page.get_by_test_id("progress")).to_have_text(f"Case {position} of {total} · {answered} answered")
    bar = page.locator("progress.study-progress")
    expect(bar).to_have_attribute("value", str(answered))
    expect(bar).to_have_accessible_name(f"Answered {answered} of {total}")


def class_button(page, code: str):
    return page.locator("label.class-choice").filter(has=page.locator(f'input[value="{code}"]'))


def likert_button(page, value: int):
    return page.locator("label.likert-choice").filter(has=page.locator(f'input[value="{value}"]'))


def answer_by_keyboard(page, code: str, confidence: int) -> None:
    save = page.locator("#save")
    page.keyboard.press(KEYS[code])
    expect(save).to_be_disabled()  # a class alone is not an answer
    page.keyboard.press(str(confidence))
    expect(save).to_be_enabled()
    page.keyboard.press("Enter")


def answer_by_mouse(page, code: str, confidence: int) -> None:
    save = page.get_by_role("button", name="Save and next")
    likert_button(page, confidence).click()
    expect(save).to_be_disabled()  # a confidence alone is not an answer
    expect(page.locator('[data-slot="missing"]')).to_have_text("Choose a class to save.")
    class_button(page, code).click()
    expect(save).to_be_enabled()
    save.click()


def stored(assignment, task: int) -> dict[int, tuple[str, int]]:
    field = "item__task1_position" if task == 1 else "item__task2_position"
    return {p: (a, c) for p, a, c in Answer.objects.filter(item__assignment=assignment, task=task)
            .values_list(field, "answer", "confidence")}


def check_help(page, screenshot=None) -> None:
    """The help window: "?" opens and closes it, so does the Help button; it lists the seven
    classes in their colours with their definitions, and the five Likert labels."""
    dialog = page.get_by_role("dialog", name="Help and class definitions")
    expect(dialog).to_be_hidden()
    page.keyboard.press("?")
    expect(dialog).to_be_visible()
    if screenshot:
        page.screenshot(path=screenshot)
    for cls in CLASSES:
        expect(dialog.get_by_text(cls.definition)).to_be_visible()
        entry = dialog.locator(".definitions > div").filter(has_text=cls.definition)
        assert entry.locator(".swatch").evaluate("e => getComputedStyle(e).backgroundColor") == rgb(cls.colour)
        expect(entry.locator("dt")).to_contain_text(cls.label)
    items = dialog.locator(".likert-help li")
    expect(items).to_have_text([label for _, label in LIKERT_CHOICES])
    assert [int(v) for v in items.evaluate_all("es => es.map(e => e.value)")] == [1, 2, 3, 4, 5]
    chosen = page.evaluate("() => [...document.querySelectorAll('input:checked')].map(e => e.value)")
    page.keyboard.press("m")  # the help is modal: the keys choose nothing behind it
    page.keyboard.press("1")
    assert page.evaluate("() => [...document.querySelectorAll('input:checked')].map(e => e.value)") == chosen
    page.keyboard.press("?")
    expect(dialog).to_be_hidden()
    page.get_by_role("button", name="Help").click()
    expect(dialog).to_be_visible()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    page.get_by_role("button", name="Help").click()
    dialog.get_by_role("button", name="Close").click()
    expect(dialog).to_be_hidden()


def enlarge_and_close(page, rank: int, cls, how: str, screenshot=None) -> tuple[float, float]:
    """Open the neighbour at ``rank`` (by ``click``, ``Enter`` or ``Space``), check the enlarged
    view, close it (Escape or its Close button); the test's clock just before opening and just
    after it opened."""
    button = page.get_by_role("button", name=f"Enlarge rank {rank}: {cls.label}", exact=True)
    dialog = page.get_by_role("dialog", name=f"Rank {rank}: {cls.label}")
    expect(dialog).to_be_hidden()
    before = time.monotonic()
    if how == "click":
        button.click()
    else:
        button.focus()
        page.keyboard.press(how)
    expect(dialog).to_be_visible()
    opened = time.monotonic()
    # The neighbour large, in its class colour, with its rank and class as on the page, beside the
    # case being read: the same two images the page shows (the same opaque URLs), nothing more.
    big = page.locator("#enlarge-case img")
    query = page.locator("#enlarge-query img")
    card = page.locator(f'li.neighbour[data-rank="{rank}"]')
    assert big.get_attribute("src") == card.locator("img").get_attribute("src")
    assert query.get_attribute("src") == page.get_by_test_id("case-image").get_attribute("src")
    for image in (big, query):
        page.wait_for_function("e => e.complete && e.naturalWidth > 0", arg=image.element_handle())
    assert page.locator("#enlarge-case").evaluate("e => getComputedStyle(e).borderTopColor") == rgb(cls.colour)
    expect(page.locator("#enlarge-case figcaption")).to_have_text(f"#{rank} {cls.label} {cls.code}")
    expect(dialog).not_to_contain_text(re.compile(r"vote|similarity|\d\.\d", re.I))
    viewport = page.viewport_size
    for image in (big, query):
        assert box(image)["y"] >= 0 and bottom(image) <= viewport["height"], "the enlarged view is cut off"
        assert box(image)["width"] > box(card)["width"]
    if viewport["width"] > 600:
        assert box(query)["x"] >= box(big)["x"] + box(big)["width"], "the case is not beside the neighbour"
    no_horizontal_overflow(page)
    if screenshot:
        page.screenshot(path=screenshot)
    # Modal: the shortcuts choose nothing behind it.
    chosen = page.evaluate("() => [...document.querySelectorAll('input:checked')].map(e => e.value)")
    page.keyboard.press("m")
    page.keyboard.press("1")
    assert page.evaluate("() => [...document.querySelectorAll('input:checked')].map(e => e.value)") == chosen
    page.wait_for_timeout(300)
    if how == "click":
        page.keyboard.press("Escape")
    else:
        dialog.get_by_role("button", name="Close").click()
    expect(dialog).to_be_hidden()
    expect(button).to_be_focused()  # back where the reader was
    return before, opened


def test_a_reader_reads_both_tasks_and_the_admin_follows_the_progress(open_page, live_server, open_study, readers,
                                                                       study_admin, artifacts):
    study = open_study
    reader = readers[0]
    assignment = Assignment.objects.get(study=study, reader=reader)
    page = open_page()
    sign_in(page, reader)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Reader studies").click()
    page.get_by_role("link", name=study.name).click()
    expect(page.get_by_test_id("task2-closed")).to_have_text(
        "Task 2 opens after you have finished Task 1 and the washout has passed.")
    page.get_by_role("link", name="Start Task 1").click()
    expect(page).to_have_url(re.compile(rf"/studies/{study.id}/task/1/$"))

    # --- Task 1, case 1: the page at laptop size --------------------------------------------
    progress(page, 1, 0)
    image = page.get_by_test_id("case-image")
    page.wait_for_function("e => e.complete && e.naturalWidth > 0", arg=image.element_handle())
    expect(image).to_have_attribute("alt", "Case 1")
    save = page.get_by_role("button", name="Save and next")
    expect(save).to_be_disabled()
    expect(page.locator('[data-slot="missing"]')).to_have_text("Choose a class and your confidence to save.")
    # The image is large, the class buttons and the scale are beside it, and Save is in the window.
    panel = page.locator(".answer-panel")
    assert box(image)["height"] >= 450 and bottom(image) <= LAPTOP["height"]
    assert box(panel)["x"] >= box(image)["x"] + box(image)["width"]
    assert bottom(save) <= LAPTOP["height"], "Save is below the window on a laptop"
    page.set_viewport_size(LAPTOP_IN_BROWSER)  # the same screen less the browser's own bars
    assert box(image)["height"] >= 400 and bottom(save) <= LAPTOP_IN_BROWSER["height"]
    page.set_viewport_size(LAPTOP)
    # Seven class buttons in the class colours (keyboard letter shown), five Likert buttons.
    buttons = page.locator("label.class-choice")
    expect(buttons).to_have_count(7)
    for cls in CLASSES:
        button = class_button(page, cls.code)
        face = button.locator("> span")
        assert face.evaluate("e => getComputedStyle(e).borderTopColor") == rgb(cls.colour)
        assert face.evaluate("e => getComputedStyle(e).borderLeftColor") == rgb(cls.colour)
        expect(button.locator("kbd")).to_have_text(KEYS[cls.code].upper())
        expect(page.get_by_role("radio", name=cls.label, exact=True)).to_have_count(1)
    for value, label in LIKERT_CHOICES:
        expect(page.get_by_role("radio", name=f"{value} {label}", exact=True)).to_have_count(1)
    every_control_is_named(page)
    no_horizontal_overflow(page)
    # Nothing on the page tells the case's diagnosis, its identity, or a neighbour vote.
    item1 = AssignedCase.objects.select_related("study_case__case").get(assignment=assignment, task1_position=1)
    html = page.content()
    assert item1.study_case.case.image_id not in html and "vote" not in html.lower()

    check_help(page, screenshot=artifacts / "study-help-laptop-1366x768.png")

    # Keyboard: the letter picks the class and focuses it, visibly; the selected state is clear.
    mel = class_button(page, "mel")
    white = "rgb(255, 255, 255)"
    assert mel.locator("> span").evaluate("e => getComputedStyle(e).backgroundColor") == white
    page.keyboard.press("m")
    expect(page.get_by_role("radio", name="Melanoma", exact=True)).to_be_checked()
    expect(page.get_by_role("radio", name="Melanoma", exact=True)).to_be_focused()
    face = mel.locator("> span")
    assert face.evaluate("e => getComputedStyle(e).outlineStyle") == "solid"
    assert face.evaluate("e => parseFloat(getComputedStyle(e).outlineWidth)") >= 2
    assert face.evaluate("e => getComputedStyle(e).backgroundColor") != white
    assert rgb(BY_CODE["mel"].colour) in face.evaluate("e => getComputedStyle(e).boxShadow")
    assert class_button(page, "nv").locator("> span").evaluate("e => getComputedStyle(e).backgroundColor") == white
    page.keyboard.press("Tab")  # on to the confidence scale: its focus is visible too
    focused = page.locator(".likert-choice input:focus + span")
    expect(focused).to_have_count(1)
    assert focused.evaluate("e => getComputedStyle(e).outlineStyle") == "solid"
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Enter")  # no confidence yet: Enter saves nothing
    expect(save).to_be_disabled()
    progress(page, 1, 0)
    page.keyboard.press("4")
    expect(page.get_by_role("radio", name="4 Fairly confident")).to_be_checked()
    assert likert_button(page, 4).locator("> span").evaluate("e => getComputedStyle(e).backgroundColor") != white
    expect(save).to_be_enabled()
    expect(page.locator('[data-slot="missing"]')).to_have_text("")
    page.screenshot(path=artifacts / "study-task1-laptop-1366x768.png")
    page.keyboard.press("Enter")
    progress(page, 2, 1)
    expect(save).to_be_disabled()  # the next case starts empty

    # Case 2 by mouse.
    answer_by_mouse(page, "bkl", 2)
    progress(page, 3, 2)

    # Case 3: a class chosen, then the page reloaded: nothing was saved, the reader resumes at case 3.
    page.keyboard.press("n")
    page.reload()
    progress(page, 3, 2)
    assert stored(assignment, 1) == {1: ("mel", 4), 2: ("bkl", 2)}
    # ... and so does a new visit from the study page.
    page.goto(f"/studies/{study.id}/")
    page.get_by_role("link", name="Continue Task 1").click()
    progress(page, 3, 2)

    # Tablet: the buttons under the image, no sideways scrolling.
    page.set_viewport_size(TABLET)
    page.keyboard.press("k")
    page.keyboard.press("3")
    figure = page.locator("figure.query-image")
    assert box(panel)["y"] >= bottom(figure)
    assert box(page.get_by_test_id("case-image"))["width"] >= 600
    no_horizontal_overflow(page)
    page.screenshot(path=artifacts / "study-task1-tablet-768x1024.png", full_page=True)
    page.set_viewport_size(LAPTOP)
    page.reload()
    progress(page, 3, 2)

    answer_by_keyboard(page, "akiec", 1)
    progress(page, 4, 3)
    answer_by_mouse(page, "df", 5)
    progress(page, 5, 4)
    answer_by_keyboard(page, "vasc", 3)

    # Task 1 done: Task 2 opens after the washout, and the page says when.
    expect(page.get_by_role("heading", name=f"{study.name}: Task 1 finished")).to_be_visible()
    assignment.refresh_from_db()
    assert assignment.task1_finished_at is not None
    assert stored(assignment, 1) == {1: ("mel", 4), 2: ("bkl", 2), 3: ("akiec", 1), 4: ("df", 5), 5: ("vasc", 3)}
    opens = timezone.localtime(assignment.task1_finished_at + study.washout).strftime("%Y-%m-%d %H:%M")
    expect(page.get_by_role("status")).to_have_text(f"Task 2 opens on {opens}, after the washout.")
    page.goto(f"/studies/{study.id}/task/2/")
    expect(page.get_by_role("status")).to_contain_text(f"Task 2 opens at {opens}")

    # --- Task 2, after the washout (moved back in the database) ---------------------------
    Assignment.objects.filter(id=assignment.id).update(
        task1_finished_at=assignment.task1_finished_at - study.washout - timedelta(minutes=1))
    page.goto(f"/studies/{study.id}/")
    requested = time.monotonic()
    page.get_by_role("link", name="Start Task 2").click()
    expect(page).to_have_url(re.compile(rf"/studies/{study.id}/task/2/$"))
    page.wait_for_load_state("domcontentloaded")
    loaded, served = time.monotonic(), timezone.now()
    progress(page, 1, 0)
    item = AssignedCase.objects.select_related("study_case__case").get(assignment=assignment, task2_position=1)
    shown = list(StudyNeighbour.objects.filter(study_case=item.study_case).select_related("case").order_by("rank"))
    assert len(shown) == study.neighbours_shown == 6
    cards = page.locator("li.neighbour")
    expect(cards).to_have_count(6)
    for card, neighbour in zip(cards.all(), shown):
        cls = BY_CODE[neighbour.case.dx]
        frame = card.locator("figure.framed")
        assert frame.evaluate("e => getComputedStyle(e).borderTopColor") == rgb(cls.colour)
        expect(card.locator(".rank")).to_have_text(f"#{neighbour.rank}")
        expect(card.locator(".label")).to_have_text(cls.label)
        picture = card.get_by_role("img", name=f"Rank {neighbour.rank} similar case: {cls.label}")
        page.wait_for_function("e => e.complete && e.naturalWidth > 0", arg=picture.element_handle())
    # The query is the Task 1 image turned by 180 degrees.
    query = page.get_by_test_id("case-image")
    expect(query).to_have_attribute("alt", "Case 1, rotated 180 degrees")
    page.wait_for_function("e => e.complete && e.naturalWidth > 0", arg=query.element_handle())

    def picture(path: str) -> np.ndarray:
        response = page.request.get(live_server.url + path)
        assert response.ok and response.headers["content-type"] == "image/jpeg"
        return np.asarray(Image.open(io.BytesIO(response.body())).convert("L"), float)

    turned = picture(query.get_attribute("src"))
    upright = picture(f"/studies/{study.id}/task/1/image/{item.task1_position}/")
    assert turned.shape == upright.shape
    assert np.abs(turned[::-1, ::-1] - upright).mean() < 3 < np.abs(turned - upright).mean()
    # Laptop: image | the six neighbours, 3 x 2 | the answer, all in the window, no vote shown.
    assert len({round(box(c)["x"]) for c in cards.all()}) == 3
    assert len({round(box(c)["y"]) for c in cards.all()}) == 2
    similar = page.locator("section.similar")
    assert box(page.locator("figure.query-image"))["x"] + box(page.locator("figure.query-image"))["width"] \
        <= box(similar)["x"]
    assert box(similar)["x"] + box(similar)["width"] <= box(panel)["x"]
    assert max(bottom(c) for c in cards.all()) <= LAPTOP["height"]
    assert bottom(save) <= LAPTOP["height"]
    page.set_viewport_size(LAPTOP_IN_BROWSER)
    assert bottom(save) <= LAPTOP_IN_BROWSER["height"]
    assert max(bottom(c) for c in cards.all()) <= LAPTOP_IN_BROWSER["height"]
    page.set_viewport_size(LAPTOP)
    assert "vote" not in page.content().lower()
    every_control_is_named(page)
    no_horizontal_overflow(page)
    page.keyboard.press("n")
    page.keyboard.press("5")
    page.screenshot(path=artifacts / "study-task2-laptop-1366x768.png")
    page.set_viewport_size(TABLET)
    assert box(panel)["y"] >= max(bottom(c) for c in cards.all())
    assert len({round(box(c)["y"]) for c in cards.all()}) == 2
    no_horizontal_overflow(page)
    page.screenshot(path=artifacts / "study-task2-tablet-768x1024.png", full_page=True)
    page.set_viewport_size(LAPTOP)

    # Enlarging a similar case, by mouse and by keyboard, at laptop and tablet widths; each
    # enlargement is recorded: which rank, how long after the case was shown, for how long.
    by_rank = {n.rank: BY_CODE[n.case.dx] for n in shown}
    clocks = [enlarge_and_close(page, 2, by_rank[2], "click",
                                screenshot=artifacts / "study-task2-enlarged-laptop-1366x768.png")]
    clocks.append(enlarge_and_close(page, 1, by_rank[1], "Enter"))
    clocks.append(enlarge_and_close(page, 3, by_rank[3], " "))
    page.set_viewport_size(TABLET)
    clocks.append(enlarge_and_close(page, 4, by_rank[4], "click",
                                    screenshot=artifacts / "study-task2-enlarged-tablet-768x1024.png"))
    page.set_viewport_size(LAPTOP)
    recorded = NeighbourView.objects.filter(item=item)
    deadline = time.monotonic() + 10
    while recorded.count() < 4 and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    views = list(recorded.order_by("seconds_after_shown"))
    assert [v.rank for v in views] == [2, 1, 3, 4] and {v.task for v in views} == {2}
    for view, (before, opened) in zip(views, clocks):
        # The page's clock starts when the page has arrived, so its seconds lie between these bounds.
        assert before - loaded - 0.25 <= view.seconds_after_shown <= opened - requested + 0.25, (view, before, opened)
        assert 0.3 <= view.seconds_open < 15
        assert served - timedelta(seconds=30) <= view.opened_at <= timezone.now()
    assert len({v.client_id for v in views}) == 4

    check_help(page)
    expect(page.get_by_role("radio", name="Melanocytic nevus")).to_be_checked()  # kept while the help was open
    # Focus is back on the Help button, where Enter opens the help; a shortcut takes the reader back to the form.
    page.keyboard.press("5")
    page.keyboard.press("Enter")
    progress(page, 2, 1)
    for position, (code, confidence) in enumerate([("mel", 4), ("bcc", 3), ("nv", 2), ("df", 5)], start=2):
        progress(page, position, position - 1)
        (answer_by_keyboard if position % 2 else answer_by_mouse)(page, code, confidence)
    expect(page.get_by_role("heading", name=f"{study.name}: Task 2 finished")).to_be_visible()
    assert stored(assignment, 2) == {1: ("nv", 5), 2: ("mel", 4), 3: ("bcc", 3), 4: ("nv", 2), 5: ("df", 5)}

    # --- The study administrator's dashboard ---------------------------------------------
    admin = open_page()
    sign_in(admin, study_admin)
    admin.goto(f"/studies/manage/{study.id}/")
    rows = admin.get_by_test_id("progress-table").locator("tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.filter(has_text="reader_1").locator("td").nth(2)).to_contain_text("5 of 5 · finished")
    expect(rows.filter(has_text="reader_1").locator("td").nth(3)).to_contain_text("5 of 5 · finished")
    expect(rows.filter(has_text="reader_2").locator("td").nth(2)).to_have_text("0 of 5")
    expect(rows.filter(has_text="reader_2").locator("td").nth(3)).to_have_text("0 of 5 · after Task 1")
    expect(admin.get_by_test_id("table-4ii").locator("tbody tr")).to_have_count(1)
    every_control_is_named(admin)
    no_horizontal_overflow(admin)
    admin.screenshot(path=artifacts / "study-dashboard-laptop-1366x768.png", full_page=True)
    admin.set_viewport_size(TABLET)
    no_horizontal_overflow(admin)
    admin.screenshot(path=artifacts / "study-dashboard-tablet-768x1024.png", full_page=True)


def test_without_javascript_a_reader_answers_with_the_plain_form(open_page, open_study, readers):
    study = open_study
    assignment = Assignment.objects.get(study=study, reader=readers[1])
    page = open_page(javascript=False)
    sign_in(page, readers[1])
    page.goto(f"/studies/{study.id}/task/1/")
    progress(page, 1, 0)
    save = page.get_by_role("button", name="Save and next")
    expect(save).to_be_enabled()  # only the script disables it; the browser and the server check
    save.click()  # nothing chosen: the browser's own check keeps the form
    progress(page, 1, 0)
    assert not Answer.objects.exists()
    class_button(page, "nv").click()
    likert_button(page, 3).click()
    save.click()
    progress(page, 2, 1)
    assert stored(assignment, 1) == {1: ("nv", 3)}
    # The help is a <details> at the end of the page.
    help_box = page.locator("details#help")
    expect(help_box.get_by_text(BY_CODE["mel"].definition)).to_be_hidden()
    help_box.locator("summary").click()
    expect(help_box.get_by_text(BY_CODE["mel"].definition)).to_be_visible()
    expect(help_box.locator(".likert-help li")).to_have_text([label for _, label in LIKERT_CHOICES])


def test_relevance_mode_asks_for_every_neighbour_before_saving(open_page, make_study, readers, artifacts):
    from readerstudy.models import RelevanceRating
    from readerstudy.services import answer_submit, study_assign, study_open

    study = make_study(name="Relevance", relevance_ratings=True, washout=timedelta(0), cases_per_reader=2)
    study_assign(study=study, readers=readers[:1])
    study_open(study=study)
    assignment = Assignment.objects.get(study=study)
    for position in (1, 2):
        answer_submit(assignment=assignment, task=1, position=position, answer="nv", confidence=3)
    page = open_page()
    sign_in(page, readers[0])
    page.goto(f"/studies/{study.id}/task/2/")
    progress(page, 1, 0, total=2)
    save = page.get_by_role("button", name="Save and next")
    page.keyboard.press("b")
    page.keyboard.press("2")
    expect(save).to_be_disabled()
    expect(page.locator('[data-slot="missing"]')).to_have_text("Choose every relevance to save.")
    cards = page.locator("li.neighbour")
    expect(cards).to_have_count(6)
    for rank in range(1, 7):
        expect(save).to_be_disabled()
        group = page.get_by_role("group", name=f"Relevance of #{rank}")
        group.get_by_role("radio", name=f"{rank % 4} ").click()
    expect(save).to_be_enabled()
    every_control_is_named(page)
    no_horizontal_overflow(page)
    assert len({round(box(c)["y"]) for c in cards.all()}) == 2
    for card in cards.all():  # each card holds its ratings: nothing overlaps the next row
        assert bottom(card.locator("fieldset.relevance")) <= bottom(card) + 0.5
    assert bottom(cards.nth(0)) <= box(cards.nth(3))["y"]
    page.screenshot(path=artifacts / "study-task2-relevance-laptop-1366x768.png")
    page.keyboard.press("Enter")
    progress(page, 2, 1, total=2)
    assert sorted(RelevanceRating.objects.values_list("rank", "rating")) == [(r, r % 4) for r in range(1, 7)]
