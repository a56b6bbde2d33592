"""Reading real news pages: our `corpus.html.extract_article` beside trafilatura's plain output and
other extractors on the saved pages of bench/data/pages (their README says where each comes from).

    .venv/bin/python -m bench.extraction [--extractors ours,trafilatura,readability,gne] [--page ID] [--show]

Per page, `expectations.jsonl` holds: `must` (strings of the article body), `must_not` (bylines,
editor credits, comment prompts, related links, promotion, footers), `headings` (must come out as
sections), `apart` (pairs of strings that must land in different paragraphs), and the `title` and
`date` when the page states them. Every page is a real article, so an extractor that returns no
text rejects a real article. readability-lxml and GNE are optional (`pip install .[bench]`).

Text is compared after NFKC and with all whitespace removed, within one paragraph: a string found
only across a paragraph break is not found. A paragraph is a blank-line block of our markdown, a
line of the plain-text extractors, a block element or `<br>` line of readability's HTML. A heading
is kept when ours writes it as a `#` line and when the others give it a line of its own.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lxml import html as lxml_html

PAGES = Path(__file__).resolve().parent / "data" / "pages"
EXPECTATIONS = PAGES / "expectations.jsonl"
_WHITESPACE = re.compile(r"\s+")
_ISO_DATE = re.compile(r"((?:19|20)\d\d)[-/.年](\d{1,2})[-/.月](\d{1,2})")
# Elements whose text a browser starts on a new line; readability's HTML is read with them.
_BLOCKS = frozenset(
    "p div h1 h2 h3 h4 h5 h6 li ul ol table tr td th blockquote pre section article header footer "
    "figure figcaption dd dt dl form center".split()
)
FIGURES = (
    ("body", "body strings kept (share)"),
    ("apart", "paragraphs kept apart (share of pairs)"),
    ("headings", "headings kept as sections (share)"),
    ("clean", "boilerplate left out (pages)"),
    ("title", "title right (pages)"),
    ("date", "date right (pages)"),
    ("rejected", "real articles rejected (pages)"),
)


def norm(text: str) -> str:
    """The form strings are compared in: NFKC (full-width letters, compatibility forms) without whitespace."""
    return _WHITESPACE.sub("", unicodedata.normalize("NFKC", text))


@dataclass(frozen=True)
class Page:
    id: str
    source: str
    lang: str
    path: Path
    expect: dict[str, Any]

    def html(self) -> str:
        from corpus.html import decode_html

        data = self.path.read_bytes()
        return decode_html(gzip.decompress(data) if self.path.suffix == ".gz" else data)


@dataclass
class Extracted:
    """What an extractor made of a page: paragraphs in order, which of them are headings."""

    paragraphs: list[str] = field(default_factory=list)
    # Indexes into paragraphs; None for plain-text output, where a heading is a line of its own.
    headings: set[int] | None = None
    title: str = ""
    date: str = ""

    @property
    def rejected(self) -> bool:
        return not any(p.strip() for p in self.paragraphs)


def load_pages(path: Path = EXPECTATIONS) -> list[Page]:
    pages = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            entry = json.loads(line)
            pages.append(Page(entry["id"], entry["source"], entry["lang"], PAGES / entry["file"], entry))
    return pages


def visible_text(html: str) -> str:
    """The page's text as a reader sees it (scripts and styles left out), for checking expectations."""
    tree = lxml_html.document_fromstring(html)
    for bad in tree.xpath("//script|//style|//noscript|//template"):
        bad.drop_tree()
    return "\n".join(_html_lines(tree))


def _html_lines(root: Any) -> list[str]:
    """Text of an HTML tree split the way a browser breaks lines: block elements and `<br>`."""
    lines: list[str] = [""]

    def walk(element: Any) -> None:
        tag = element.tag if isinstance(element.tag, str) else ""
        if tag == "br" or tag in _BLOCKS:
            lines.append("")
        if tag not in {"script", "style", "noscript", "template"} and isinstance(element.tag, str):
            lines[-1] += element.text or ""
            for child in element:
                walk(child)
        if tag in _BLOCKS:
            lines.append("")
        lines[-1] += element.tail or ""

    walk(root)
    return [line.strip() for line in lines if line.strip()]


# ---------------------------------------------------------------- extractors
def run_ours(html: str) -> Extracted:
    from corpus.html import extract_article
    from corpus.reader import ArticleError

    try:
        article = extract_article(html)
    except ArticleError:
        return Extracted()
    paragraphs: list[str] = []
    headings: set[int] = set()
    for block in article.body.split("\n\n"):
        block = block.strip()
        if block.startswith("#"):
            headings.add(len(paragraphs))
            block = block.lstrip("#").strip()
        if block:
            paragraphs.append(block)
    return Extracted(paragraphs, headings, article.title, article.date)


def _lines(text: str | None) -> list[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


def run_trafilatura(html: str) -> Extracted:
    """trafilatura's plain output (`extract`, text format) and the metadata it finds by default."""
    import trafilatura

    found = trafilatura.bare_extraction(html, with_metadata=True)
    if found is None:
        return Extracted()
    plain = trafilatura.extract(html)
    return Extracted(paragraphs=_lines(plain), title=found.title or "", date=found.date or "")


def run_readability(html: str) -> Extracted:
    from readability import Document

    doc = Document(html)
    summary = doc.summary(html_partial=True)
    lines = _html_lines(lxml_html.fragment_fromstring(summary, create_parent="div")) if summary.strip() else []
    return Extracted(paragraphs=lines, title=doc.short_title() or "")


def run_gne(html: str) -> Extracted:
    from gne import GeneralNewsExtractor

    try:
        found = GeneralNewsExtractor().extract(html)
    except Exception:  # GNE raises on pages it cannot parse: that is a rejection
        return Extracted()
    return Extracted(
        paragraphs=_lines(found.get("content")), title=found.get("title") or "", date=_iso(found.get("publish_time"))
    )


EXTRACTORS: dict[str, Callable[[str], Extracted]] = {
    "ours": run_ours,
    "trafilatura": run_trafilatura,
    "readability": run_readability,
    "gne": run_gne,
}


def _iso(text: str | None) -> str:
    match = _ISO_DATE.search(text or "")
    return f"{match[1]}-{int(match[2]):02d}-{int(match[3]):02d}" if match else ""


# ---------------------------------------------------------------- scoring
def _find(paragraphs: list[str], needle: str) -> int:
    """Index of the paragraph holding `needle`, or -1."""
    target = norm(needle)
    return next((i for i, p in enumerate(paragraphs) if target in p), -1)


def score(page: Page, got: Extracted) -> dict[str, Any]:
    """One page's counts: found/total per figure, and what was missed (for --show)."""
    expect = page.expect
    paragraphs = [norm(p) for p in got.paragraphs]
    joined = "\x00".join(paragraphs)
    missing = [s for s in expect.get("must", []) if norm(s) not in joined]
    leaked = [s for s in expect.get("must_not", []) if norm(s) in joined]
    glued = [
        pair
        for pair in expect.get("apart", [])
        if (a := _find(paragraphs, pair[0])) < 0 or (b := _find(paragraphs, pair[1])) < 0 or a == b
    ]
    sections = set(paragraphs) if got.headings is None else {paragraphs[i] for i in got.headings}
    lost_headings = [h for h in expect.get("headings", []) if norm(h) not in sections]
    result: dict[str, Any] = {
        "body": (len(expect.get("must", [])) - len(missing), len(expect.get("must", []))),
        "apart": (len(expect.get("apart", [])) - len(glued), len(expect.get("apart", []))),
        "headings": (len(expect.get("headings", [])) - len(lost_headings), len(expect.get("headings", []))),
        "rejected": got.rejected,
        "missing": missing,
        "leaked": leaked,
        "glued": glued,
        "lost_headings": lost_headings,
    }
    if expect.get("must_not"):
        result["clean"] = not leaked
    if expect.get("title"):
        result["title"] = norm(got.title).casefold() == norm(expect["title"]).casefold()
        result["got_title"] = got.title
    if expect.get("date"):
        result["date"] = got.date[:10] == expect["date"]
        result["got_date"] = got.date
    return result


def summarize(scores: list[dict[str, Any]]) -> dict[str, Any]:
    """Shares for the string figures, page counts (with the number of pages that have the figure) for the rest."""
    summary: dict[str, Any] = {"pages": len(scores)}
    for key in ("body", "apart", "headings"):
        kept = sum(s[key][0] for s in scores)
        total = sum(s[key][1] for s in scores)
        summary[key] = {"kept": kept, "total": total, "share": round(kept / total, 4) if total else None}
    for key in ("clean", "title", "date"):
        having = [s[key] for s in scores if key in s]
        summary[key] = {"right": sum(having), "pages": len(having)}
    summary["rejected"] = {"right": sum(s["rejected"] for s in scores), "pages": len(scores)}
    return summary


def available(names: list[str]) -> list[str]:
    """The extractors whose packages are installed (readability-lxml and GNE are optional)."""
    modules = {"readability": "readability", "gne": "gne"}
    found = []
    for name in names:
        try:
            if name in modules:
                __import__(modules[name])
            found.append(name)
        except ImportError:
            print(f"{name}: not installed (pip install .[bench]); left out", file=sys.stderr)
    return found


def evaluate(
    pages: list[Page], names: list[str], groups: dict[str, Callable[[Page], bool]] | None = None
) -> dict[str, Any]:
    """Every extractor on every page: summaries overall and per group of pages, and the per-page scores."""
    groups = groups or {}
    per_page: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in names}
    for page in pages:
        html = page.html()
        for name in names:
            per_page[name][page.id] = score(page, EXTRACTORS[name](html))
    result: dict[str, Any] = {"pages": len(pages), "extractors": {}}
    for name in names:
        scores = [per_page[name][p.id] for p in pages]
        entry = {"all": summarize(scores), "pages": per_page[name]}
        for group, member in groups.items():
            entry[group] = summarize([per_page[name][p.id] for p in pages if member(p)])
        result["extractors"][name] = entry
    return result


def cell(summary: dict[str, Any], key: str) -> str:
    value = summary[key]
    if "share" in value:
        return "-" if value["share"] is None else f"{value['share']:.3f}"
    return f"{value['right']}/{value['pages']}"


def print_table(result: dict[str, Any], group: str = "all") -> None:
    names = list(result["extractors"])
    width = max(len(label) for _, label in FIGURES)
    print(f"{'figure (' + group + ')':<{width}}  " + "  ".join(f"{n:>11}" for n in names))
    for key, label in FIGURES:
        cells = [cell(result["extractors"][n][group], key) for n in names]
        print(f"{label:<{width}}  " + "  ".join(f"{c:>11}" for c in cells))


def failures(result: dict[str, Any], name: str) -> Iterator[str]:
    for page_id, s in result["extractors"][name]["pages"].items():
        problems = []
        for key in ("missing", "leaked", "glued", "lost_headings"):
            if s[key]:
                problems.append(f"{key} {s[key]}")
        if s.get("title") is False:
            problems.append(f"title {s['got_title']!r}")
        if s.get("date") is False:
            problems.append(f"date {s['got_date']!r}")
        if s["rejected"]:
            problems.append("REJECTED")
        if problems:
            yield f"{page_id}: " + "; ".join(problems)


def run(names: list[str] | None = None) -> dict[str, Any]:
    """The bench section: every installed extractor on every page, overall and per language."""
    names = available(names or list(EXTRACTORS))
    pages = load_pages()
    result = evaluate(pages, names, {"zh": lambda p: p.lang == "zh", "en": lambda p: p.lang == "en"})
    result["sources"] = {
        f"{source} ({lang})": sum(p.source == source and p.lang == lang for p in pages)
        for source, lang in sorted({(p.source, p.lang) for p in pages})
    }
    for group in ("all", "zh", "en"):
        print_table(result, group)
        print()
    return result


def fit_noise_chars(pages: list[Page], choices: tuple[int, ...] = (40, 60, 80, 100, 150, 200, 400)) -> dict[str, Any]:
    """Cross-validate `corpus.html_body.MAX_NOISE_CHARS` over the pages split by site (5 folds): each
    fold picks the value with the most clean pages plus body strings kept on the other sites."""
    from corpus import html_body

    chosen = html_body.MAX_NOISE_CHARS
    scores: dict[int, dict[str, tuple[int, int]]] = {}
    try:
        for value in choices:
            html_body.MAX_NOISE_CHARS = value
            scores[value] = {}
            for page in pages:
                s = score(page, run_ours(page.html()))
                scores[value][page.id] = (int(s.get("clean", False)), s["body"][0])
    finally:
        html_body.MAX_NOISE_CHARS = chosen
    sites = sorted({p.id.split("/")[0] + "/" + re.split(r"[-.]", p.id.split("/")[1])[0] for p in pages})
    fold_of = {site: i % 5 for i, site in enumerate(sites)}
    site_of = {p.id: p.id.split("/")[0] + "/" + re.split(r"[-.]", p.id.split("/")[1])[0] for p in pages}
    folds = []
    for fold in range(5):
        train = [p.id for p in pages if fold_of[site_of[p.id]] != fold]
        test = [p.id for p in pages if fold_of[site_of[p.id]] == fold]
        best = max(choices, key=lambda v: (sum(sum(scores[v][i]) for i in train), -abs(v - chosen)))
        folds.append({"chosen": best, "held_out": sum(sum(scores[best][i]) for i in test)})
    totals = {v: sum(sum(x) for x in scores[v].values()) for v in choices}
    return {"folds": folds, "totals": totals, "sites": len(sites)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--extractors", default=",".join(EXTRACTORS))
    parser.add_argument("--page", default="", help="only pages whose id contains this")
    parser.add_argument("--show", action="store_true", help="list what each extractor got wrong, page by page")
    parser.add_argument("--json", type=Path, help="write the full result here")
    parser.add_argument("--fit", action="store_true", help="cross-validate the furniture length limit by site")
    args = parser.parse_args()
    names = available([n for n in args.extractors.split(",") if n])
    unknown = set(names) - set(EXTRACTORS)
    if unknown:
        parser.error(f"unknown extractors: {', '.join(sorted(unknown))}")
    pages = [p for p in load_pages() if args.page in p.id]
    if args.fit:
        print(json.dumps(fit_noise_chars(pages), indent=1))
        return 0
    result = evaluate(pages, names, {"zh": lambda p: p.lang == "zh", "en": lambda p: p.lang == "en"})
    for group in ("all", "zh", "en"):
        print_table(result, group)
        print()
    if args.show:
        for name in names:
            print(f"== {name}")
            for line in failures(result, name):
                print("  " + line)
    if args.json:
        args.json.write_text(json.dumps(result, ensure_ascii=False, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
