"""A clinician's whole query in Chromium: upload, live result from a real worker, overlays,
the enlarge dialog by keyboard, the neighbour vote, layout at laptop and tablet widths, delete."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from retrieval import selectors
from retrieval.classes import BY_CODE
from retrieval.models import Case, Query
from retrieval.views import VOTE_NOTE
from tests.browser.conftest import LAPTOP, TABLET, rgb, sign_in
from tests.conftest import wait_for

# serialized_rollback: the roles (groups) come from a data migration that a transactional flush removes.
pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True, serialized_rollback=True)]

WORKER_TIMEOUT_MS = 120_000


def wider_than_window(page) -> list[str]:
    """Elements that stick out of the window on the right (the page would scroll sideways)."""
    return page.evaluate("""() => {
        const width = document.documentElement.clientWidth;
        const wide = [...document.querySelectorAll("body *")].filter(e => {
            const box = e.getBoundingClientRect();
            return box.width > 0 && box.right > width + 0.5;
        }).map(e => `${e.tagName.toLowerCase()}#${e.id}.${e.className}`);
        return document.documentElement.scrollWidth > window.innerWidth ? ["(page)", ...wide] : wide;
    }""")


def test_a_clinician_queries_reads_the_result_and_deletes_it(page, request, clinician, ready_index, settings,
                                                             artifacts):
    settings.QUERY_MAX_UPLOAD_MB = 1
    lesion = Case.objects.filter(collection="synthetic").order_by("image_id").first()
    image_path = lesion.image.path

    sign_in(page, clinician)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Search").click()
    expect(page).to_have_url(re.compile(r"/search/$"))
    expect(page.get_by_role("heading", name="Search similar cases")).to_be_visible()

    # The browser checks type and size before anything is sent.
    picker = page.get_by_label("Dermoscopic image")
    error = page.locator("#upload-error")
    picker.set_input_files({"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not an image"})
    expect(error).to_have_text("\u201cnotes.txt\u201d is not a supported image type. Use JPEG, PNG, TIFF, WebP, BMP or DICOM.")
    picker.set_input_files({"name": "huge.png", "mimeType": "image/png", "buffer": b"\x89PNG" + bytes(1_500_000)})
    expect(error).to_have_text("\u201chuge.png\u201d is 1.4 MB; the largest accepted upload is 1 MB.")
    expect(picker).to_have_attribute("aria-invalid", "true")
    page.get_by_role("button", name="Search similar cases").click()
    expect(error).to_be_visible()
    assert page.url.endswith("/search/") and Query.objects.count() == 0

    # Dropping a file on the drop zone chooses it like the picker does.
    page.evaluate("""([name, bytes]) => {
        const transfer = new DataTransfer();
        transfer.items.add(new File([new Uint8Array(bytes)], name, {type: "image/jpeg"}));
        document.getElementById("dropzone").dispatchEvent(new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
    }""", ["dropped.jpg", list(open(image_path, "rb").read())])
    expect(error).to_be_hidden()
    expect(page.locator("#chosen-name")).to_contain_text("dropped.jpg")
    expect(page.locator("#preview")).to_be_visible()
    assert page.evaluate("document.getElementById('id_image').files[0].name") == "dropped.jpg"

    # Upload through the API with no worker running yet: the page shows the queued state.
    picker.set_input_files(image_path)
    page.get_by_role("button", name="Search similar cases").click()
    expect(page).to_have_url(re.compile(r"/queries/\d+/$"))
    query = Query.objects.get()
    assert query.original_name == lesion.image.name.rsplit("/", 1)[-1] and query.user == clinician
    status = page.get_by_role("status").filter(has_text="Queued")
    expect(status).to_contain_text("waiting for a worker")
    expect(page.locator("#status-progress")).to_be_visible()
    expect(page.locator('#status-steps [data-step="pending"]')).to_have_attribute("aria-current", "step")
    expect(page.locator("#neighbours > li")).to_have_count(0)
    page.evaluate("window.__sameDocument = true")

    # A real worker starts; the page polls the API and renders the result without reloading.
    request.getfixturevalue("celery_worker_process")
    cards = page.locator("#neighbours > li.neighbour")
    expect(cards).to_have_count(6, timeout=WORKER_TIMEOUT_MS)
    assert page.evaluate("window.__sameDocument === true"), "the page reloaded"
    expect(page.locator("#status-text")).to_have_text("Done.")
    expect(page.locator("#status-detail")).to_have_text("6 similar cases found.")
    expect(page.locator("#status-progress")).to_be_hidden()

    query.refresh_from_db()
    stored = list(query.neighbours.select_related("case").order_by("rank"))
    assert query.status == "done" and len(stored) == 6
    shown = selectors.query_payload(query)["neighbours"]  # what the API sent the page
    for index, (row, sent) in enumerate(zip(stored, shown)):
        card = cards.nth(index)
        cls = BY_CODE[row.case.dx]
        expect(card.locator('[data-slot="rank"]')).to_have_text(f"#{row.rank}")
        expect(card.locator('[data-slot="code"]')).to_have_text(cls.code)
        expect(card.locator('[data-slot="label"]')).to_have_text(cls.label)
        assert sent["case_id"] == row.case_id
        expect(card.locator('[data-slot="similarity"]')).to_have_text(f"{sent['similarity']:.3f}")
        expect(card.locator('[data-slot="localization"]')).to_have_text(row.case.localization)
        expect(card.locator('[data-slot="diagnosis_type"]')).to_have_text(row.case.get_dx_type_display())
        frame = card.locator("figure.framed")
        assert frame.evaluate("e => getComputedStyle(e).borderTopColor") == rgb(cls.colour)
        badge = card.locator('[data-slot="rank"]')  # the rank badge: the class colour, text that reads on it
        assert badge.evaluate("e => getComputedStyle(e).backgroundColor") == rgb(cls.colour)
        assert badge.evaluate("e => getComputedStyle(e).color") == rgb(cls.badge_text)
        expect(card.get_by_role("img", name=f"Rank {row.rank} similar case: {cls.label}")).to_be_visible()
    assert page.locator("img:not([alt])").count() == 0

    # The evidence map pairs follow in the query's second stage: the page fills each in, without reloading.
    expect(page.locator('#neighbours details.evidence[data-evidence="ready"]')).to_have_count(
        6, timeout=WORKER_TIMEOUT_MS)
    pair = cards.nth(0).locator("details.evidence")
    pair.locator("summary").click()
    expect(pair.locator('[data-slot="evidence-pending"]')).to_be_hidden()
    first = query.neighbours.order_by("rank").first()
    expect(pair.locator('[data-slot="evidence-query"]')).to_be_visible()
    assert pair.locator('[data-slot="evidence-query"]').get_attribute("src").endswith(first.evidence_query)
    assert pair.locator('[data-slot="evidence-case"]').get_attribute("src").endswith(first.evidence_case)
    pair.locator("summary").click()
    assert page.evaluate("window.__sameDocument === true"), "the page reloaded"

    # A neighbour's overlay, by keyboard: Space turns it on, Enter off, a click on again.
    first = cards.first
    toggle = first.get_by_role("button", name="Saliency overlay of rank 1")
    overlay = first.locator('[data-slot="overlay"]')
    expect(toggle).to_have_attribute("aria-pressed", "false")
    expect(overlay).to_be_hidden()
    toggle.focus()
    page.keyboard.press("Space")
    expect(toggle).to_have_attribute("aria-pressed", "true")
    expect(overlay).to_be_visible()
    page.wait_for_function("e => e.complete && e.naturalWidth > 0", arg=overlay.element_handle())
    page.keyboard.press("Enter")
    expect(toggle).to_have_attribute("aria-pressed", "false")
    expect(overlay).to_be_hidden()
    toggle.click()
    expect(overlay).to_be_visible()

    # The query's overlay and the opacity slider (which applies to every overlay).
    query_toggle = page.locator("#query-overlay-toggle")
    query_overlay = page.locator("#query-overlay")
    expect(query_overlay).to_be_hidden()
    query_toggle.click()
    expect(query_toggle).to_have_attribute("aria-pressed", "true")
    expect(query_overlay).to_be_visible()
    page.wait_for_function("e => e.complete && e.naturalWidth > 0", arg=query_overlay.element_handle())
    slider = page.get_by_label("Overlay opacity")
    slider.focus()
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    expect(page.locator("#overlay-opacity-value")).to_have_text("50 %")
    assert query_overlay.evaluate("e => getComputedStyle(e).opacity") == "0.5"
    assert overlay.evaluate("e => getComputedStyle(e).opacity") == "0.5"

    # Enlarge by keyboard; Esc closes and gives focus back.
    enlarge_link = first.locator('[data-slot="enlarge"]')
    enlarge_link.focus()
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name=re.compile(r"^Rank 1: "))
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text(f"Similarity {shown[0]['similarity']:.3f}")
    assert page.evaluate("document.activeElement.closest('dialog') !== null"), "focus moved into the dialog"
    big = dialog.locator("#enlarge-case .base")
    assert big.get_attribute("src") == first.locator('[data-slot="image"]').get_attribute("src")
    expect(dialog.locator("#enlarge-toggle")).to_have_attribute("aria-pressed", "true")  # as on the card
    expect(dialog.locator("#enlarge-case .overlay")).to_be_visible()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    assert enlarge_link.evaluate("e => document.activeElement === e"), "focus returned to the image"
    # ... and by mouse, with the close button.
    cards.nth(1).locator('[data-slot="image"]').click()
    expect(page.get_by_role("dialog", name=re.compile(r"^Rank 2: "))).to_be_visible()
    page.get_by_role("button", name="Close").click()
    expect(page.locator("#enlarge")).to_be_hidden()

    # The neighbour vote is labelled as such, and says it is not a diagnosis.
    vote = page.locator("#vote")
    expect(vote.get_by_role("heading", name="Neighbour vote")).to_be_visible()
    expect(vote).to_contain_text(VOTE_NOTE)
    shares = [int(s.rstrip(" %")) for s in vote.locator('[data-slot="share"]').all_inner_texts()]
    assert shares == sorted(shares, reverse=True) and 98 <= sum(shares) <= 102
    assert "diagnos" not in vote.inner_text().replace("It is not a diagnosis.", "").lower()
    definitions = page.locator("#class-definitions")
    definitions.locator("summary").focus()
    page.keyboard.press("Enter")
    expect(definitions.get_by_text(BY_CODE["mel"].definition)).to_be_visible()

    # Laptop: the query beside its neighbours, three per row, nothing wider than the window.
    query_box = page.locator(".query-panel").bounding_box()
    grid_box = page.locator(".neighbours-panel").bounding_box()
    assert query_box["x"] + query_box["width"] <= grid_box["x"] and abs(query_box["y"] - grid_box["y"]) < 2
    assert len({round(cards.nth(i).bounding_box()["y"]) for i in range(6)}) == 2
    assert wider_than_window(page) == []
    page.screenshot(path=artifacts / "result-laptop-1366x768.png", full_page=True)

    # Tablet: the query above the neighbours; still no horizontal scrolling.
    page.set_viewport_size(TABLET)
    query_box = page.locator(".query-panel").bounding_box()
    grid_box = page.locator(".neighbours-panel").bounding_box()
    assert query_box["y"] + query_box["height"] <= grid_box["y"]
    assert all(cards.nth(i).bounding_box()["width"] >= 180 for i in range(6))
    assert wider_than_window(page) == []
    page.screenshot(path=artifacts / "result-tablet-768x1024.png", full_page=True)

    # History: the query is listed; delete asks first (Esc cancels), then removes it.
    page.get_by_role("link", name="New search").click()
    row = page.locator(f"#history-{query.pk}")
    expect(row).to_contain_text(f"Query #{query.pk}")
    expect(row).to_contain_text("Done")
    assert wider_than_window(page) == []
    page.screenshot(path=artifacts / "search-tablet-768x1024.png", full_page=True)
    page.set_viewport_size(LAPTOP)
    page.screenshot(path=artifacts / "search-laptop-1366x768.png", full_page=True)

    row.get_by_role("link", name=f"Delete query #{query.pk}").click()
    confirm = page.get_by_role("dialog", name="Delete this search?")
    expect(confirm).to_be_visible()
    expect(confirm).to_contain_text(f"Query #{query.pk} ({query.original_name}) will be deleted")
    assert page.evaluate("document.activeElement.textContent") == "Cancel"
    page.keyboard.press("Escape")
    expect(confirm).to_be_hidden()
    assert Query.objects.filter(pk=query.pk).exists()

    row.get_by_role("link", name=f"Delete query #{query.pk}").click()
    confirm.get_by_role("button", name="Delete").click()
    expect(page.get_by_role("status").filter(has_text="was deleted")).to_contain_text(f"Query #{query.pk}")
    expect(page.locator(f"#history-{query.pk}")).to_have_count(0)
    assert not Query.objects.filter(pk=query.pk).exists()


def test_without_javascript_the_form_the_result_and_delete_still_work(open_page, request, clinician, ready_index):
    page = open_page(javascript=False)
    lesion = Case.objects.filter(collection="synthetic").order_by("-image_id").first()

    sign_in(page, clinician)
    page.goto("/search/")
    expect(page.locator(".js-only").first).to_be_hidden()
    page.get_by_role("button", name="Search similar cases").click()  # nothing chosen: the server explains
    expect(page.locator("#upload-error")).to_have_text("Choose a dermoscopic image to upload.")

    page.get_by_label("Dermoscopic image").set_input_files(lesion.image.path)
    page.get_by_role("button", name="Search similar cases").click()
    expect(page).to_have_url(re.compile(r"/queries/\d+/$"))
    query = Query.objects.get()
    expect(page.locator("#status-text")).to_contain_text("Queued")
    reload_now = page.get_by_role("link", name="reload it now")
    expect(reload_now).to_be_visible()

    # Browsers without scripts reload the page (<noscript> meta refresh; Playwright's script
    # switch leaves <noscript> unparsed, so the test follows the reload link instead) until the
    # server renders the result.
    request.getfixturevalue("celery_worker_process")
    cards = page.locator("#neighbours > li.neighbour")

    def result_rendered() -> bool:
        if cards.count() == 6:
            return True
        reload_now.click()
        return False

    wait_for(result_rendered, timeout=WORKER_TIMEOUT_MS / 1000, interval=1, what="the server-rendered result")
    expect(cards).to_have_count(6)
    expect(page.locator("#status-text")).to_have_text("Done.")
    expect(page.locator("#vote")).to_contain_text(VOTE_NOTE)
    first = cards.first
    expect(first.get_by_role("button", name="Saliency overlay of rank 1")).to_be_hidden()
    overlay_link = first.get_by_role("link", name="Saliency overlay")
    expect(overlay_link).to_be_visible()
    # Enlarging is following the image's link; the overlay is a link to its own image.
    with page.expect_navigation() as navigation:
        first.get_by_role("link", name=re.compile(r"^Enlarge rank 1: ")).click()
    assert navigation.value.status == 200 and navigation.value.headers["content-type"] == "image/jpeg"
    page.go_back()

    page.locator(f'a[href="/queries/{query.pk}/delete/"]').first.click()
    expect(page.get_by_role("heading", name=f"Delete query #{query.pk}?")).to_be_visible()
    page.get_by_role("button", name="Delete").click()
    expect(page).to_have_url(re.compile(r"/search/$"))
    expect(page.get_by_role("status")).to_contain_text(f"Query #{query.pk}")
    assert not Query.objects.filter(pk=query.pk).exists()


def test_the_restriction_the_clinician_ticks_is_sent_through_the_api_and_shown_on_the_result(
        page, clinician, ready_index):
    lesion = Case.objects.filter(collection="synthetic").order_by("image_id").first()
    site = sorted(set(Case.objects.filter(collection=ready_index.collection).exclude(split="test")
                      .values_list("localization", flat=True)))[0]
    sign_in(page, clinician)
    page.goto("/search/")
    expect(page.locator("#filter-sites")).to_be_hidden()  # collapsed: the default is no restriction
    page.get_by_text("Restrict similar cases (optional)").click()
    page.locator(f'#filter-sites input[value="{site}"]').check()
    page.get_by_label("Female").check()
    page.get_by_label("from").fill("70")
    page.get_by_label("to", exact=True).fill("20")
    page.get_by_label("Dermoscopic image").set_input_files(lesion.image.path)
    page.get_by_role("button", name="Search similar cases").click()
    expect(page.locator("#upload-error")).to_contain_text("is above")  # the API's 400, shown in place
    assert not Query.objects.exists()

    page.get_by_label("from").fill("20")
    page.get_by_label("to", exact=True).fill("70")
    page.get_by_role("button", name="Search similar cases").click()
    expect(page).to_have_url(re.compile(r"/queries/\d+/$"))
    query = Query.objects.get()
    assert query.search_filter == {"sites": [site], "sexes": ["female"], "age_min": 20, "age_max": 70}
    expect(page.locator("#query-filter")).to_have_text(
        f"Similar cases restricted to: body site {site}; sex female; age 20-70.")
