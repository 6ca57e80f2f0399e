"""The operations page in Chromium: what an operator sees at laptop and tablet widths, and that
it refreshes itself (a job's progress moves on the page without anyone reloading it)."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from retrieval.models import TrainingJob
from tests.browser.conftest import LAPTOP, TABLET, sign_in
from tests.ops_scenario import make_operations

# serialized_rollback, as every transactional test here: a plain flush re-creates content types
# under new ids, which the next serialized test cannot restore over.
pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True, serialized_rollback=True)]


def test_the_operations_page_shows_workers_and_jobs_and_refreshes_itself(page, admin_user, clinician, settings,
                                                                        media_root, artifacts):
    admin_user.set_password(f"pw-{admin_user.username}")
    admin_user.save()
    scenario = make_operations(clinician, settings)
    sign_in(page, admin_user)
    page.get_by_role("link", name="Operations").click()
    expect(page.get_by_role("heading", name="Operations", level=1)).to_be_visible()
    workers = page.locator("#workers")
    expect(workers.get_by_text("alive", exact=True)).to_be_visible()
    expect(workers.get_by_text("no beat")).to_be_visible()
    training = page.get_by_role("progressbar", name=f"training #{scenario['training'].id} progress")
    expect(training).to_have_attribute("value", "3")
    page.screenshot(path=artifacts / "ops-laptop-1366x768.png", full_page=True)

    # The worker trains on; the page shows it by itself (it refreshes every 10 s).
    TrainingJob.objects.filter(id=scenario["training"].id).update(done=4, message="4ch epoch 2 of 2: done")
    expect(training).to_have_attribute("value", "4", timeout=25_000)
    expect(page.locator("#jobs")).to_contain_text("4ch epoch 2 of 2: done")

    page.set_viewport_size(TABLET)
    page.reload()
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the page scrolls sideways at tablet width by {overflow}px"
    page.screenshot(path=artifacts / "ops-tablet-768x1024.png", full_page=True)
    page.set_viewport_size(LAPTOP)
