"""The front page and the docs/ pages link only to files of the repository: every relative link or image in
README.md and docs/*.md resolves to an existing file or folder inside the tree, and every "DESIGN.md §N" cited
anywhere in the tree names a section that docs/DESIGN.md has."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")  # [text](target) and ![alt](target)
CODE = re.compile(r"```.*?```|`[^`\n]*`", re.S)  # links inside code are not links


def links(text: str) -> list[str]:
    return LINK.findall(CODE.sub("", text))


def broken(page: Path, root: Path = ROOT) -> list[str]:
    """The relative links of ``page`` that do not resolve to a file or folder inside ``root``."""
    bad = []
    for target in links(page.read_text()):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue  # http(s):, mailto:, an anchor on the same page
        path = (page.parent / target.split("#", 1)[0]).resolve()
        if not path.is_relative_to(root.resolve()) or not path.exists():
            bad.append(target)
    return bad


def test_the_link_finder_on_a_hand_made_page(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("x")
    page = tmp_path / "README.md"
    page.write_text("[a](docs/a.md) [b](docs/b.md) ![i](docs/a.md#top) [w](https://x.org) [s](#here)\n"
                    "`[c](docs/c.md)` [up](../outside.md)\n```\n[d](docs/d.md)\n```\n")
    assert links(page.read_text()) == ["docs/a.md", "docs/b.md", "docs/a.md#top", "https://x.org", "#here",
                                       "../outside.md"]
    assert broken(page, tmp_path) == ["docs/b.md", "../outside.md"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    assert page.exists()
    assert not broken(page), f"{page.relative_to(ROOT)} links to missing files: {broken(page)}"


def test_design_section_references_exist():
    sections = set(re.findall(r"^## (\d+)\.", (ROOT / "docs" / "DESIGN.md").read_text(), re.M))
    cited, outside = {}, []
    skip = {".git", ".venv", "results", "node_modules"}
    for path in ROOT.rglob("*"):
        if path.suffix not in (".py", ".md", ".yaml", ".ipynb") or any(p in skip or p.startswith(".venv")
                                                                      for p in path.relative_to(ROOT).parts):
            continue
        text = path.read_text(errors="ignore")
        for n in re.findall(r"DESIGN(?:\.md)?\s*(?:§|section\s+)(\d+)", text):
            cited.setdefault(n, []).append(str(path.relative_to(ROOT)))
        if "shared" + "/DESIGN" in text:  # the design outside the repository: cite docs/DESIGN.md
            outside.append(str(path.relative_to(ROOT)))
    assert cited, "no DESIGN.md section is cited anywhere: the pattern is wrong"
    missing = {n: files for n, files in cited.items() if n not in sections}
    assert not missing, f"sections cited but not in docs/DESIGN.md: {missing}"
    assert not outside, f"cite docs/DESIGN.md, not a design file outside the repository: {outside}"
