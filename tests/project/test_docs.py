"""The README is a front door and docs/ holds the rest: the README stays within 300 lines, every
relative link in the README and docs/*.md reaches an existing file (and, with `#anchor`, an
existing heading of it), and the README's index links every page of docs/. Markdown is parsed as
CommonMark (markdown-it-py), so links in code are not links; anchors are GitHub's heading slugs."""

import re
from functools import cache
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from markdown_it import MarkdownIt

from conftest import ROOT

README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAX_README_LINES = 300
INDEX_HEADING = "Documentation"  # the README's index of docs/
PAGES = sorted(DOCS.glob("*.md"))


@cache
def _tokens(path: Path) -> list:
    return MarkdownIt("commonmark").enable("table").parse(path.read_text())


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@cache
def _anchors(path: Path) -> frozenset[str]:
    tokens, seen, anchors = _tokens(path), {}, set()
    for opening, inline in zip(tokens, tokens[1:]):
        if opening.type == "heading_open":
            slug = _slug("".join(child.content for child in inline.children
                                 if child.type in ("text", "code_inline")))
            anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return frozenset(anchors)


def _links(path: Path) -> list[str]:
    """Every link and image target in the file, in order."""
    found = []
    for token in _tokens(path):
        for child in token.children or ():
            if child.type == "link_open":
                found.append(child.attrGet("href"))
            elif child.type == "image":
                found.append(child.attrGet("src"))
    return found


def _section_links(path: Path, heading: str) -> list[str]:
    """The link targets under the level-2 heading `heading`, up to the next heading of its level."""
    tokens, inside, found = _tokens(path), False, []
    for opening, inline in zip(tokens, tokens[1:]):
        if opening.type == "heading_open" and opening.tag == "h2":
            inside = inline.content == heading
        elif inside:
            found += [child.attrGet("href") for child in opening.children or () if child.type == "link_open"]
    return found


def test_readme_is_a_front_door():
    lines = len(README.read_text().splitlines())
    assert lines <= MAX_README_LINES, \
        f"README.md has {lines} lines, over {MAX_README_LINES}: move the detail to a page of docs/ and link it"


@pytest.mark.parametrize("path", [README, *PAGES], ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_reach_a_file_and_a_heading(path):
    broken = []
    for target in _links(path):
        parts = urlsplit(target)
        if parts.scheme or parts.netloc:
            continue  # absolute URLs are not checked (no network)
        file = (path.parent / unquote(parts.path)).resolve() if parts.path else path
        if not file.exists():
            broken.append(f"{target}: no file {file}")
        elif parts.fragment and file.suffix == ".md" and parts.fragment not in _anchors(file):
            broken.append(f"{target}: no heading #{parts.fragment} in {file.relative_to(ROOT)}")
    assert not broken, f"{path.relative_to(ROOT)} links to what is not there:\n" + "\n".join(broken)


def test_readme_index_links_every_docs_page():
    assert PAGES, "docs/ has no pages"
    index = {(README.parent / urlsplit(target).path).resolve() for target in _section_links(README, INDEX_HEADING)}
    missing = [page.name for page in PAGES if page.resolve() not in index]
    assert not missing, f"README.md's '{INDEX_HEADING}' section does not link {missing}: add a row for each"
