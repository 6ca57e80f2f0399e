"""The new-study form in Chromium: each checkbox and radio button sits left of its label, on the
label's first line (not centred across the row by the generic ``input { width: 100% }``)."""
from __future__ import annotations

import pytest

from tests.browser.conftest import sign_in

# serialized_rollback: the roles (groups) come from a data migration that a transactional flush removes.
pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True, serialized_rollback=True)]


def test_each_checkbox_and_radio_button_sits_at_the_start_of_its_labels_first_line(page, study_admin, artifacts):
    sign_in(page, study_admin)
    page.goto("/studies/manage/")
    form = page.locator("form.study-form")
    form_box = form.bounding_box()
    controls = form.locator("input[type=checkbox], input[type=radio]")
    assert controls.count() == 5  # three settings, two designs
    for i in range(controls.count()):
        control = controls.nth(i)
        name = control.get_attribute("id")
        label = form.locator(f"label[for={name}]")
        line = float(label.evaluate("e => parseFloat(getComputedStyle(e).lineHeight) || 1.2 * parseFloat(getComputedStyle(e).fontSize)"))
        box, text = control.bounding_box(), label.bounding_box()
        assert box["width"] < 30, f"{name} is stretched to {box['width']} px"
        assert abs(box["x"] - form_box["x"]) <= 2, f"{name} is not at the form's left edge"
        if control.get_attribute("type") == "checkbox":  # beside the label, which follows it
            assert box["x"] + box["width"] <= text["x"] + 1, f"{name} is not left of its label"
        centre = box["y"] + box["height"] / 2
        assert text["y"] <= centre <= text["y"] + line, f"{name} is not on its label's first line"
    page.locator("#new-title").scroll_into_view_if_needed()
    form.screenshot(path=str(artifacts / "study-form.png"))
