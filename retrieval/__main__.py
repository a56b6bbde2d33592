"""`python -m retrieval "问题"`: quoted, cited answers on the command line.

With a question argument: readable output (or `--json`). With none: batch mode, one
question per stdin line and one JSON line per input line, the model loaded once. User
errors (missing index, broken config, model mismatch) are one line and exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from settings import ConfigError, load_config, with_overrides


def json_line(data: dict) -> str:
    """One JSON line. Unicode line separators are escaped so line-splitting readers stay in step."""
    text = json.dumps(data, ensure_ascii=False)
    for sep in ("\u2028", "\u2029", "\x85"):
        text = text.replace(sep, json.dumps(sep)[1:-1])
    return text + "\n"


def render(answer, console) -> None:  # type: ignore[no-untyped-def]
    """Print an answer as quotes with the best sentence highlighted, then the citation."""
    from rich.text import Text

    if not answer.hits:
        console.print("[yellow]No passage found. Ask a question about the indexed articles.[/]")
        return
    if not answer.answered:
        console.print("[yellow]The articles do not seem to cover this. Closest passage (weak match):[/]")
    for hit in answer.hits if answer.answered else answer.hits[:1]:
        quote = Text("> ", style="dim")
        quote.append(hit.text[: hit.highlight_start])
        quote.append(hit.text[hit.highlight_start : hit.highlight_end], style="bold yellow")
        quote.append(hit.text[hit.highlight_end :])
        console.print(quote)
        cite = Text(f"  — {hit.citation}", style="cyan")
        if hit.url:
            cite.append(f"  {hit.url}", style="underline blue")
        console.print(cite)
        console.print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m retrieval",
        description="Ask the indexed articles. With no question, read questions from stdin (one per line) "
        "and write one JSON line per input line.",
    )
    parser.add_argument("question", nargs="*", help="the question (omit to read stdin)")
    parser.add_argument("--k", type=int, default=None, help="passages per question (clamped to 1..max_k)")
    parser.add_argument("--index", type=Path, help="index directory (default from config)")
    parser.add_argument("--config", type=Path, help="config file (default: config.toml)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per question")
    args = parser.parse_args(argv)

    from index.publish import IndexMissingError
    from retrieval.search import ModelMismatchError, Retriever

    try:
        config = with_overrides(load_config(args.config), index_dir=args.index)
        retriever = Retriever.open(config.index.dir, config)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except (IndexMissingError, ModelMismatchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    try:
        if args.question:
            # Undecodable bytes in argv arrive as surrogate escapes; make them U+FFFD like stdin.
            question = " ".join(args.question).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            answer = retriever.answer(question, args.k)
            if args.json:
                sys.stdout.write(json_line(answer.to_dict()))
            else:
                from rich.console import Console

                render(answer, Console())
            return 0
        return _batch(retriever, args.k)
    except KeyboardInterrupt:
        return 130
    finally:
        retriever.close()


def _batch(retriever, k: int | None) -> int:  # type: ignore[no-untyped-def]
    """One JSON line per stdin line, in order, flushed as it goes (works in a pipe)."""
    stdin = sys.stdin.buffer
    for raw in stdin:
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        answer = retriever.answer(line, k)
        sys.stdout.write(json_line(answer.to_dict()))
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
