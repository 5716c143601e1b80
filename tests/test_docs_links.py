"""Every relative link of the README and the docs pages reaches a file, and its #anchor a heading.

The README is short and links to docs/ for everything else, so a renamed heading or a
moved page would otherwise leave a newcomer at a dead link.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", "datasets/README.md",
         *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a markdown heading: lower case, punctuation dropped, spaces '-'."""
    text = heading.strip().lstrip("#").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.MULTILINE | re.DOTALL)
    return {github_anchor(line) for line in text.splitlines() if re.match(r"#{1,6} ", line)}


def relative_links(page: str) -> list[str]:
    text = re.sub(r"^```.*?^```", "", (ROOT / page).read_text(), flags=re.MULTILINE | re.DOTALL)
    found = [a or b for a, b in LINK.findall(text)]
    return [link for link in found if not re.match(r"[a-z]+:", link)]


def test_github_anchor_follows_githubs_rule():
    assert github_anchor("## `medtransfer run`: one configuration, trained") == (
        "medtransfer-run-one-configuration-trained")
    assert github_anchor("### What a run does (the study, as implemented)") == (
        "what-a-run-does-the-study-as-implemented")


@pytest.mark.parametrize("page", PAGES)
def test_every_relative_link_reaches_a_file_and_a_heading(page):
    broken = []
    for link in relative_links(page):
        target, _, anchor = link.partition("#")
        path = (ROOT / page).parent / target if target else ROOT / page
        if not path.exists():
            broken.append(f"{link}: no file {path.relative_to(ROOT)}")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{link}: no heading #{anchor} in {path.relative_to(ROOT)}")
    assert broken == [], f"{page}: broken links"


def test_the_readme_is_read_in_five_minutes():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250
