"""Every relative link in README.md, docs/, benchmarks/ and orderflow's README points at a file
that exists, and every `#anchor` at a heading that exists (GitHub's anchor rules); every symlink
under docs/ resolves.

Links are resolved from the real file (a page reached through a symlink such as docs/metrics.md
is linked from where it really lives, docs/reference/metrics.md), as GitHub renders it.
"""

from __future__ import annotations

import os
import re
import unicodedata
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

#: Paths other work and outside checks rely on: each must stay a file (a symlink to its page).
CONTRACT_PATHS = [
    "configuration.md", "metrics.md", "compatibility.md", "orderflow.md", "oncall.md",
    "platform.md", "failures.md", "journeys.md", "integrations.md", "logging.md", "rabbitmq.md",
    "performance.md", "find-a-lost-order.md",
]

_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE_CODE = re.compile(r"`+[^`]*`+")
_LINK = re.compile(r"(?<!\!)\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REF_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"", re.I)


def _pages() -> list[Path]:
    pages = [ROOT / "README.md", *sorted(DOCS.rglob("*.md")),
             *sorted((ROOT / "benchmarks").glob("*.md")),
             *sorted((ROOT / "examples" / "orderflow").glob("README*.md"))]
    seen: set[Path] = set()
    out = []
    for p in pages:
        real = p.resolve()
        if real.exists() and real not in seen:
            seen.add(real)
            out.append(real)
    return out


def _prose_lines(text: str) -> list[tuple[int, str]]:
    """Lines outside fenced code blocks, with inline code removed."""
    out, fenced = [], False
    for n, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append((n, _INLINE_CODE.sub("", line)))
    return out


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: its text lower-cased, punctuation and symbols dropped
    (letters, digits, `_`, `-` and spaces stay), spaces turned into hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links and images: their text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    kept = "".join(c for c in text.lower()
                   if c in " -" or unicodedata.category(c)[0] in "LMN"
                   or unicodedata.category(c) == "Pc")
    return kept.replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    found: set[str] = set()
    counts: dict[str, int] = {}
    text = path.read_text(encoding="utf-8")
    for _, line in _prose_lines(text):
        found.update(_HTML_ANCHOR.findall(line))
    fenced = False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        m = None if fenced else _HEADING.match(line)
        if m:
            base = github_anchor(m.group(2))
            n = counts.get(base, 0)
            counts[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return frozenset(found)


def _links(path: Path) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    for n, line in _prose_lines(path.read_text(encoding="utf-8")):
        for rx in (_LINK, _IMAGE):
            out.extend((n, m.group(1)) for m in rx.finditer(line))
        m = _REF_DEF.match(line)
        if m:
            out.append((n, m.group(1)))
    return out


def _problems(path: Path) -> list[str]:
    problems = []
    for n, target in _links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        where = f"{os.path.relpath(path, ROOT)}:{n}: {target}"
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            problems.append(f"{where}: no such file")
            continue
        if anchor and dest.is_file() and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{where}: no heading with anchor #{anchor} in "
                            f"{os.path.relpath(dest, ROOT)}")
    return problems


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    assert _problems(page) == []


def test_every_symlink_under_docs_resolves() -> None:
    links = [p for p in DOCS.rglob("*") if p.is_symlink()]
    assert links, "docs/ has no symlinks: the contract paths should point at their pages"
    broken = [f"{p.relative_to(ROOT)} -> {p.readlink()}" for p in links if not p.exists()]
    absolute = [str(p.relative_to(ROOT)) for p in links if p.readlink().is_absolute()]
    assert broken == [] and absolute == []


@pytest.mark.parametrize("name", CONTRACT_PATHS)
def test_contract_paths_exist(name: str) -> None:
    path = DOCS / name
    assert path.is_file(), f"docs/{name} must exist (a symlink to its page is fine)"


def test_anchor_rules() -> None:
    assert github_anchor("Errors: retry or dead-letter") == "errors-retry-or-dead-letter"
    assert github_anchor("Cache-aside: in the process, then Redis") == \
        "cache-aside-in-the-process-then-redis"
    assert github_anchor("Why not …") == "why-not-"
    assert github_anchor("On-call: `obskit dlq`") == "on-call-obskit-dlq"
    assert github_anchor("Walk-through: \"order ord_01J… is late\"") == \
        "walk-through-order-ord_01j-is-late"
    assert github_anchor("The MES and scaling") == "the-mes-and-scaling"


def test_the_checker_finds_a_broken_link(tmp_path: Path) -> None:
    (tmp_path / "there.md").write_text("# Here\n")
    page = tmp_path / "x.md"
    page.write_text("# T\n\n[a](missing.md) [b](#t) [c](#nope) [d](there.md#here) "
                    "[e](there.md#gone) `[f](in-code.md)`\n\n```\n[g](in-a-block.md)\n```\n")
    found = [p.split(": ", 1)[1] for p in _problems(page)]
    assert found == ["missing.md: no such file",
                     "#nope: no heading with anchor #nope in " + os.path.relpath(page, ROOT),
                     "there.md#gone: no heading with anchor #gone in "
                     + os.path.relpath(tmp_path / "there.md", ROOT)]


def test_the_index_lists_every_page() -> None:
    index = DOCS / "README.md"
    linked = {(DOCS / t.partition("#")[0]).resolve() for _, t in _links(index)
              if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.I)}
    pages = {p.resolve() for part in ("tutorial", "how-to", "reference", "explanation")
             for p in (DOCS / part).glob("*.md")} | {(DOCS / "runbooks" / "README.md").resolve()}
    assert sorted(str(p.relative_to(DOCS)) for p in pages - linked) == []
