"""`python -m retrieval "问题"`: quoted, cited answers on the command line.

With a question argument: readable output (or `--json`). With none: batch mode, one
question per stdin line and one JSON line per input line, the model loaded once; lines that
are already waiting are answered together. With `--conversation`, stdin holds conversations
(a blank line starts the next one) and follow-up questions are answered as the question they
continue (`retrieval.conversation`), each JSON line adding "understood_as". User errors
(missing index, broken config, model mismatch) are one line and exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import sys
from collections.abc import Iterator
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

    from retrieval.model import Confidence, format_also

    if not answer.hits:
        console.print("[yellow]No passage found. Ask a question about the indexed articles.[/]")
        return
    if not answer.answered:
        console.print("[yellow]The articles do not seem to cover this. Closest passage (weak match):[/]")
    elif answer.confidence is Confidence.UNSURE:
        console.print("[yellow]The closest passages; they may not answer this exactly:[/]")
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
        if hit.also:
            console.print(Text(f"  也见于 / also in: {format_also(hit.also)}", style="cyan"))
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
    parser.add_argument("--config", type=Path, help="config file (default: $QA_CONFIG, else config.toml)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per question")
    parser.add_argument(
        "--conversation",
        action="store_true",
        help="stdin holds conversations, one question per line, a blank line between conversations: "
        'follow-ups are answered in context, each JSON line adds "understood_as"',
    )
    args = parser.parse_args(argv)
    if args.conversation and args.question:
        parser.error("--conversation reads its questions from stdin: give no question argument")

    from index.backends import OPEN_ERRORS
    from retrieval.search import Retriever

    try:
        config = with_overrides(load_config(args.config), index_dir=args.index)
        retriever = Retriever.open(config.index.dir, config)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except OPEN_ERRORS as exc:
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
        return _conversations(retriever, args.k) if args.conversation else _batch(retriever, args.k)
    except KeyboardInterrupt:
        return 130
    finally:
        retriever.close()


BATCH = 32  # lines answered together: one model call for all of them


def _batch(retriever, k: int | None) -> int:  # type: ignore[no-untyped-def]
    """One JSON line per stdin line, in order, flushed after each batch (works in a pipe).

    Lines already waiting on stdin are answered together by `answer_many` (one model call
    for the batch instead of one per line); a line typed alone is answered at once.
    """
    for raw_lines in _stdin_batches(BATCH):
        questions = [raw.decode("utf-8", errors="replace").rstrip("\r\n") for raw in raw_lines]
        answers = retriever.answer_many(questions, k)
        sys.stdout.write("".join(json_line(answer.to_dict()) for answer in answers))
        sys.stdout.flush()
    return 0


def _conversations(retriever, k: int | None) -> int:  # type: ignore[no-untyped-def]
    """`--conversation`: one JSON line per question, answered with its conversation's earlier
    questions. The conversations of a stdin batch are answered together turn by turn
    (`answer_conversations`); the last one continues into the next batch."""
    from retrieval.conversation import MAX_TURNS, answer_conversations

    previous: list[str] = []
    for raw_lines in _stdin_batches(BATCH):
        questions = [raw.decode("utf-8", errors="replace").rstrip("\r\n") for raw in raw_lines]
        groups: list[list[str]] = [[]]  # questions per conversation; the first continues `previous`
        for question in questions:
            if question.strip():
                groups[-1].append(question)
            else:
                groups.append([])
        histories = [previous] + [[] for _ in groups[1:]]
        conversations = list(zip(histories, groups, strict=True))
        limit = retriever.config.retrieval.max_query_chars
        results = answer_conversations(retriever.answer_many, conversations, k, max_chars=limit)
        for conversation in results:
            for answer, rewritten in conversation:
                sys.stdout.write(json_line(answer.to_dict() | {"understood_as": rewritten.text}))
        sys.stdout.flush()
        previous = [*histories[-1], *(rewritten.text for _, rewritten in results[-1])][-MAX_TURNS:]
    return 0


def _stdin_batches(limit: int) -> Iterator[list[bytes]]:
    """Groups of at most `limit` stdin lines (see `_StdinBatches`); one line at a time when
    stdin has no descriptor (closed, or replaced by a Python stream)."""
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):
        yield from ([raw] for raw in getattr(sys.stdin, "buffer", None) or ())
        return
    reader = _StdinBatches(fd)
    while lines := reader.take(limit):
        yield lines


class _StdinBatches:
    """Lines of a file descriptor, handed out in groups of those that have already arrived.

    Read from the raw descriptor with `select`, because a buffered reader cannot tell whether
    more input is waiting without blocking: `take` waits only while no complete line is there.
    Lines end at b"\n" (kept, like iterating a binary file); an unterminated last line counts.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = bytearray()
        self.scanned = 0  # bytes of `buffer` known to hold no b"\n"
        self.eof = False

    def _has_line(self) -> bool:
        found = self.buffer.find(b"\n", self.scanned)
        self.scanned = len(self.buffer) if found < 0 else found
        return found >= 0

    def _read(self, wait: bool) -> bool:
        """Append one read to the buffer; without `wait` only if input is ready. False if none was."""
        if self.eof:
            return False
        if not wait:
            try:
                if not select.select([self.fd], [], [], 0)[0]:
                    return False
            except (OSError, ValueError):  # select cannot watch this descriptor
                return False
        chunk = os.read(self.fd, 1 << 16)
        if chunk:
            self.buffer += chunk
        else:
            self.eof = True
        return True

    def take(self, limit: int) -> list[bytes]:
        """Up to `limit` lines: at least one unless the input has ended ([] then)."""
        while not self._has_line() and self._read(wait=True):
            pass
        while self.buffer.count(b"\n") < limit and self._read(wait=False):
            pass
        lines: list[bytes] = []
        start = 0
        while len(lines) < limit:
            end = self.buffer.find(b"\n", start)
            if end < 0:
                if self.eof and start < len(self.buffer):
                    lines.append(bytes(self.buffer[start:]))
                    start = len(self.buffer)
                break
            lines.append(bytes(self.buffer[start : end + 1]))
            start = end + 1
        del self.buffer[:start]
        self.scanned = 0
        return lines


if __name__ == "__main__":
    sys.exit(main())
