"""Every page a signed-in user reaches from the top bar, at laptop and tablet widths in Chromium:
nothing scrolls sideways, and each page's screenshot is kept as a test artifact
(var/test-artifacts/pages/)."""
from __future__ import annotations

import pytest

from tests.browser.conftest import LAPTOP, TABLET, sign_in
from tests.readerstudy.conftest import make_study, open_study, readers, study_index  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True, serialized_rollback=True)]


def test_no_page_scrolls_sideways_at_laptop_or_tablet_width(page, open_study, readers, admin_user, artifacts):
    admin_user.set_password(f"pw-{admin_user.username}")
    admin_user.save()
    folder = artifacts / "pages"
    folder.mkdir(exist_ok=True)
    pages = {
        "library": "/library/", "search": "/search/", "methods": "/methods/", "studies": "/studies/",
        "studies-manage": "/studies/manage/", "study-dashboard": f"/studies/manage/{open_study.id}/",
        "operations": "/ops/", "administration": "/admin/",
    }
    sign_in(page, admin_user)
    overflowing = {}
    for viewport in (LAPTOP, TABLET):
        page.set_viewport_size(viewport)
        for name, url in pages.items():
            response = page.goto(url)
            assert response.ok, (url, response.status)
            width = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
            if width > 0:
                overflowing[f"{url} at {viewport['width']} px"] = width
            page.screenshot(path=folder / f"{name}-{viewport['width']}x{viewport['height']}.png", full_page=True)
    assert overflowing == {}, f"these pages scroll sideways (px): {overflowing}"
