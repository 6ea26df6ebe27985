"""The README stays a five-minute read, and every relative link of the README and of docs/*.md leads somewhere: the
file exists and, where the link names an `#anchor`, that file has a heading with that anchor (GitHub's rules)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 220

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+).*?\1")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


def prose_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of the lines outside fenced code blocks, inline code spans removed."""
    out, fenced = [], False
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append((n, INLINE_CODE.sub("", line)))
    return out


def github_anchor(heading: str) -> str:
    """GitHub's anchor of a heading's text: markup and link targets dropped, lower case, punctuation dropped (letters,
    digits, '_', '-' and spaces stay), spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a markdown file, repeated headings numbered -1, -2, ... as GitHub does."""
    seen: dict[str, int] = {}
    out = set()
    fenced = False
    for line in path.read_text().splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        match = None if fenced else HEADING.match(line)
        if match:
            anchor = github_anchor(match.group(2))
            count = seen.get(anchor, 0)
            seen[anchor] = count + 1
            out.add(anchor if count == 0 else f"{anchor}-{count}")
    return out


def relative_links(path: Path) -> list[tuple[int, str]]:
    return [(n, target) for n, line in prose_lines(path) for target in LINK.findall(line)
            if target and not re.match(r"^[a-z][a-z0-9+.-]*:", target, flags=re.IGNORECASE)]


def test_github_anchor_rules():
    assert github_anchor("Scale-out: task runners, accelerate") == "scale-out-task-runners-accelerate"
    assert github_anchor("One GPU, several flows: the `gpu` tag and timeouts") == \
        "one-gpu-several-flows-the-gpu-tag-and-timeouts"
    assert github_anchor("Install and pipeline times (fresh clone, no pre-existing environment)") == \
        "install-and-pipeline-times-fresh-clone-no-pre-existing-environment"
    assert github_anchor("Prompt records: the facts the exact verifier checks") == \
        "prompt-records-the-facts-the-exact-verifier-checks"


def test_the_readme_is_short():
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines (at most {README_MAX_LINES}): move text to docs/"


def test_the_readme_links_every_docs_page():
    linked = {(README.parent / target.split("#")[0]).resolve() for _, target in relative_links(README)}
    unlinked = [page.name for page in PAGES[1:] if page.resolve() not in linked]
    assert unlinked == [], f"docs pages the README does not link: {unlinked}"


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_resolves(page):
    broken = []
    for n, target in relative_links(page):
        file_part, _, anchor = target.partition("#")
        file = (page.parent / file_part).resolve() if file_part else page
        where = f"{page.relative_to(ROOT)}:{n}: {target}"
        if not file.exists():
            broken.append(f"{where}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{where}: no heading with this anchor in {file.relative_to(ROOT)}")
        elif anchor and file.suffix != ".md":
            broken.append(f"{where}: an anchor into a file that is not markdown")
    assert broken == [], "\n".join(broken)


def test_the_readme_results_table_is_the_measured_one():
    """The README's results table repeats the evaluation table of docs/measured.md row for row, so the two cannot
    drift apart when the numbers are updated."""
    readme_rows = [line for line in README.read_text().splitlines() if line.startswith("| ")]
    measured = (ROOT / "docs" / "measured.md").read_text().splitlines()
    assert readme_rows, "README.md has no results table"
    start = measured.index(readme_rows[0])
    assert measured[start:start + len(readme_rows)] == readme_rows
