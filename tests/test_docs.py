"""The README and docs/: every relative link and image resolves, anchors name real headings, the README stays short."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAX_README_LINES = 250

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
# [text](target "title") and ![alt](target); the target may be written <with spaces>.
MD_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
REF_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)", re.M)
HTML_ATTR = re.compile(r"""<(?:a|img|source)\b[^>]*?\s(?:href|src)\s*=\s*["']([^"']+)["']""", re.I)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:|^//")


def pages() -> list[Path]:
    """README.md and every Markdown page under docs/."""
    return [README, *sorted(DOCS.rglob("*.md"))]


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks (links and headings inside code are not links or headings)."""
    out, fence = [], None
    for line in text.splitlines():
        m = FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)
        elif fence is not None and m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
            fence = None
        elif fence is None:
            out.append(line)
    return out


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: rendered text, lower case, punctuation dropped, spaces to hyphens."""
    text = INLINE_CODE.sub(lambda m: m.group(2), heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link's text stays, its target goes
    text = re.sub(r"<[^>]+>", "", text).replace("*", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    out = set()
    for line in prose_lines(path.read_text(encoding="utf-8")):
        m = HEADING.match(line)
        if not m:
            continue
        slug = github_slug(m.group(2))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def link_targets(text: str) -> list[str]:
    """Targets of Markdown links, images, reference definitions and HTML href/src, outside code."""
    prose = "\n".join(INLINE_CODE.sub("", line) for line in prose_lines(text))
    found = [m.group(1) for m in MD_LINK.finditer(prose)]
    found += [m.group(1) for m in REF_DEF.finditer(prose)]
    found += [m.group(1) for m in HTML_ATTR.finditer(prose)]
    return [t[1:-1] if t.startswith("<") and t.endswith(">") else t for t in found]


def broken_links(page: Path) -> list[str]:
    """One message per relative link or image of `page` that names no file, or a heading its target lacks."""
    problems = []
    for target in link_targets(page.read_text(encoding="utf-8")):
        if SCHEME.match(target):  # http:, https:, mailto:: not checked offline
            continue
        path_part, _, anchor = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        if not dest.exists():
            problems.append(f"{page.name}: {target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{page.name}: {target}: no heading #{anchor} in {dest.name}")
    return problems


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_links_and_images_resolve(page):
    problems = broken_links(page)
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_every_page_links_somewhere():
    # Guards the link parser itself: a regex that matched nothing would pass every page above.
    assert len(link_targets(README.read_text(encoding="utf-8"))) >= 5
    assert any(t.endswith(".png") for t in link_targets(README.read_text(encoding="utf-8")))


def test_readme_is_short():
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_README_LINES, f"README.md has {n} lines; move reference material into docs/"


def test_readme_command_table_names_every_command():
    from pyramidal.cli import COMMANDS

    rows = re.findall(r"^\| `([a-z]+)` \|", README.read_text(encoding="utf-8"), re.M)
    assert rows == list(COMMANDS), "the README's command table should list every command, in --help order"


def test_docs_index_and_mkdocs_nav_list_every_page():
    names = {p.name for p in DOCS.glob("*.md")}
    nav = set(re.findall(r":\s*(\S+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(encoding="utf-8"), re.M))
    index = {t.partition("#")[0] for t in link_targets((DOCS / "index.md").read_text(encoding="utf-8"))}
    assert names - nav == set(), "pages missing from mkdocs.yml's nav"
    assert nav - names == set(), "mkdocs.yml's nav names pages that do not exist"
    assert names - {"index.md"} - index == set(), "pages missing from docs/index.md"


def test_checker_reports_broken_links(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "other.md").write_text("# Other page\n\n## Fast paths: `bench`, memory\n")
    (tmp_path / "pic.png").write_bytes(b"")
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n"
        "[ok](sub/other.md) [ok anchor](sub/other.md#fast-paths-bench-memory) [self](#title) ![ok](pic.png)\n"
        "[gone](missing.md) ![gone](images/none.png) [bad anchor](sub/other.md#nothing) [web](https://x.org/y)\n"
        "`[code](ignored.md)`\n\n```\n[fenced](ignored.md)\n```\n"
    )
    assert broken_links(page) == [
        "page.md: missing.md: no such file",
        "page.md: images/none.png: no such file",
        "page.md: sub/other.md#nothing: no heading #nothing in other.md",
    ]


@pytest.mark.parametrize(("heading", "slug"), [
    ("Memory-efficient dense blocks", "memory-efficient-dense-blocks"),
    ("`pyramidal degrade`", "pyramidal-degrade"),
    ("Performance: `pyramidal bench`, fast paths", "performance-pyramidal-bench-fast-paths"),
    ("Reproducing the research's comparisons", "reproducing-the-researchs-comparisons"),
    ("Damage tasks — exact rules", "damage-tasks--exact-rules"),
    ("memory_efficient option", "memory_efficient-option"),
])
def test_github_slug(heading, slug):
    assert github_slug(heading) == slug
