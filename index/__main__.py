"""`python -m index build|add|remove|check|info|watch`: a thin CLI over `index.build`, `index.add`,
`index.remove` and `index.feeds`.

User errors (bad config, missing corpus, a build already running) are one line on stderr
and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from settings import ConfigError, load_config, with_overrides


def _progress_printer():
    """A tqdm bar on a terminal; plain lines at every 10% otherwise (logs, CI)."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = None

        def update(done: int, total: int) -> None:
            nonlocal bar
            if bar is None:
                bar = tqdm(total=total, unit="passage", desc="embedding", file=sys.stderr)
            bar.update(done - bar.n)
            if done >= total:
                bar.close()

        return update
    last = -1

    def plain(done: int, total: int) -> None:
        nonlocal last
        step = done * 10 // max(total, 1)
        if step != last:
            last = step
            print(f"embedding {done}/{total} passages", file=sys.stderr, flush=True)

    return plain


def _waiting() -> None:
    print("another build is running; waiting for it to finish…", file=sys.stderr)


def _build(args: argparse.Namespace) -> int:
    from index.backends import open_backend
    from index.build import BuildError
    from index.publish import BuildLockedError

    config = with_overrides(load_config(args.config), corpus_dir=args.corpus, index_dir=args.index)
    try:
        with open_backend(config) as backend:
            if args.take_over:
                print(backend.take_over(), flush=True)
            report = backend.build(full=args.full, progress=_progress_printer(), on_wait=_waiting)
    except (BuildError, BuildLockedError) as exc:
        _print_skipped(getattr(exc, "skipped", ()))  # why the corpus looked empty
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _print_skipped(report.skipped)
    print(report.summary())
    return 0


def _add(args: argparse.Namespace) -> int:
    from index.add import AddError, add_sources

    return _change_corpus(args, add_sources, AddError)


def _remove(args: argparse.Namespace) -> int:
    from index.remove import RemoveError, remove_sources

    return _change_corpus(args, remove_sources, RemoveError)


def _change_corpus(args: argparse.Namespace, change, error: type[Exception]) -> int:  # type: ignore[no-untyped-def]
    """`add` or `remove`: one line per source as it is known, then the build's summary. Exit 0
    when every source was done, 1 when some were not, 2 when nothing could run or the build failed."""
    config = with_overrides(load_config(args.config), corpus_dir=args.corpus, index_dir=args.index)
    try:
        report = change(
            config,
            args.sources,
            build=not args.no_build,
            progress=_progress_printer(),
            on_result=lambda result: print(result.line(), flush=True),
            on_wait=_waiting,
        )
    except error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if report.build is not None:
        _print_skipped(report.build.skipped)
    print(report.summary())
    if report.build_error:
        return 2
    return 0 if report.ok else 1


def _watch(args: argparse.Namespace) -> int:
    import time

    from index.add import AddError
    from index.feeds import watch_once

    config = with_overrides(load_config(args.config), corpus_dir=args.corpus, index_dir=args.index)
    if not config.ingest.feeds:
        print("error: no feeds to watch: list them in [ingest] feeds", file=sys.stderr)
        return 2
    while True:
        try:
            report = watch_once(
                config,
                on_result=lambda result: print(result.line(), flush=True),
                progress=_progress_printer(),
                on_wait=_waiting,
            )
        except AddError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        for line in report.lines():
            print(line, flush=True)
        if not args.forever:
            return 0 if report.ok else 1
        time.sleep(config.ingest.poll_minutes * 60)


def _print_skipped(items) -> None:  # type: ignore[no-untyped-def]
    for item in items:
        print(f"skipped {item.path}: {item.reason}", file=sys.stderr)


def _backend(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from index.backends import open_backend

    return open_backend(with_overrides(load_config(args.config), index_dir=args.index))


def _check(args: argparse.Namespace) -> int:
    with _backend(args) as backend:
        version, problems = backend.check()
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    print(f"{version}: {'ok' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


def _info(args: argparse.Namespace) -> int:
    import json

    from index import overview
    from index.feeds import feed_status

    with _backend(args) as backend:
        described = backend.describe()
        reader = backend.open_reader()
        try:
            articles = overview.newest_first(reader.articles())
            summary = overview.summary(articles, reader.duplicate_groups())
        finally:
            reader.close()
    keep = ("id", "title", "source", "date", "url", "passages")
    articles = [{key: a.get(key) for key in keep} for a in articles]
    info = {**described, "summary": summary, "articles": articles}
    info["feeds"] = feed_status(with_overrides(load_config(args.config), index_dir=args.index))
    print(json.dumps(info, ensure_ascii=False, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m index", description="Build and inspect the passage index.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("build", "build or update the index from the corpus (incremental by content hash)"),
        ("add", "add article URLs, feed URLs, .html/.md/.txt files or directories to the corpus, then build"),
        ("remove", "remove articles (URL, corpus file or article id as `info` shows) from the corpus, then build"),
        ("check", "verify the live index: its store (SQLite, FAISS or Milvus), BM25 terms and copy groups"),
        ("info", "print the backend, the index's metadata, a summary, articles and watched feeds (JSON)"),
        ("watch", "poll the watched feeds ([ingest] feeds) once, add their new articles, then build"),
    ):
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("--index", type=Path, help="index directory (default from config)")
        cmd.add_argument("--config", type=Path, help="config file (default: $QA_CONFIG, else config.toml)")
        if name in {"build", "add", "remove", "watch"}:
            cmd.add_argument("--corpus", type=Path, help="corpus directory (default from config)")
        if name == "build":
            cmd.add_argument("--full", action="store_true", help="re-read and re-embed every article")
            cmd.add_argument(
                "--take-over",
                action="store_true",
                help="make this index directory the one writer of the Milvus collections another one claimed",
            )
        if name == "add":
            cmd.add_argument("sources", nargs="+", metavar="SOURCE", help="article or feed URL, file or directory")
            cmd.add_argument("--no-build", action="store_true", help="only write the corpus files")
        if name == "remove":
            cmd.add_argument("sources", nargs="+", metavar="SOURCE", help="article URL, corpus file or article id")
            cmd.add_argument("--no-build", action="store_true", help="only delete the corpus files")
        if name == "watch":
            cmd.add_argument("--forever", action="store_true", help="poll again every [ingest] poll_minutes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from index.backends import OPEN_ERRORS

    try:
        commands = {"build": _build, "add": _add, "remove": _remove, "check": _check, "info": _info, "watch": _watch}
        return commands[args.command](args)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except OPEN_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the live index is unchanged", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
