"""Helpers for tests that read server-rendered pages: a section's HTML, its text, the vote rows."""
from __future__ import annotations

import html
import re


def section(page: str, element_id: str) -> str:
    """The HTML of the <section> with this id (sections on these pages do not nest)."""
    match = re.search(rf'<section[^>]*\bid="{element_id}".*?</section>', page, re.S)
    assert match, f"no section #{element_id}"
    return match.group(0)


def text_of(fragment: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def vote_rows(page: str) -> list[tuple[str, str, str]]:
    """(class code, count, share) of each server-rendered vote row, top to bottom."""
    rows = re.findall(r'<li class="vote-row".*?</li>', section(page, "vote"), re.S)
    slots = [dict(re.findall(r'data-slot="(\w+)">([^<]*)<', row)) for row in rows]
    return [(slot["code"], slot["count"], slot["share"]) for slot in slots]
