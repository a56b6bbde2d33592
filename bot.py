"""`python bot.py`: the Telegram bot (long polling), or a console chat without a token.

    TELEGRAM_BOT_TOKEN=123:abc python bot.py     # Telegram, long polling
    python bot.py --console                      # same answers in the terminal (stdin)
    python bot.py --config other.toml --debug
    python bot.py stats [--export FILE.jsonl [--force]]  # what /stats shows; export questions to curate

The token is read from the environment only and redacted from every log line. When no
index is published yet it is built from the configured corpus first. User errors (bad
config, unusable corpus, rejected token) are one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from settings import Config, ConfigError, load_config

log = logging.getLogger("telegram_bot")


def _progress() -> Callable[[int, int], None]:
    """Index build progress as log lines, every 10%."""
    last = -1

    def report(done: int, total: int) -> None:
        nonlocal last
        step = done * 10 // max(total, 1)
        if step != last:
            last = step
            log.info("building index: embedded %d/%d passages", done, total)

    return report


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM before the event loop runs (e.g. during an index build) stops like Ctrl-C."""
    raise KeyboardInterrupt


def _run_bot(config: Config, token: str) -> int:
    from telegram.error import InvalidToken

    from index.backends import OPEN_ERRORS
    from telegram_bot.app import ALLOWED_UPDATES, build_application

    application = build_application(config, token)
    target = config.telegram.base_url or "api.telegram.org"
    log.info("starting long polling against %s", target.split("/bot")[0])
    try:
        application.run_polling(allowed_updates=ALLOWED_UPDATES, bootstrap_retries=-1, drop_pending_updates=False)
    except InvalidToken:
        print(
            "error: Telegram rejected the bot token: check TELEGRAM_BOT_TOKEN (and [telegram] base_url)",
            file=sys.stderr,
        )
        return 2
    except OPEN_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _run_console(config: Config) -> int:
    from index.backends import OPEN_ERRORS
    from telegram_bot.console import run_console

    try:
        return asyncio.run(run_console(config))
    except OPEN_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except asyncio.CancelledError:  # a signal during start-up
        return 0


def _run_stats(config: Config, export: Path | None, force: bool) -> int:
    """Print the /stats figures, or export the unsure, not-covered and 👎 questions, from the bot's
    state file (never created or changed here, beyond retention and moving it to state_dir)."""
    import sqlite3
    import time

    from telegram_bot import render
    from telegram_bot.console import locale_lang
    from telegram_bot.feedback import AnswerLog
    from telegram_bot.statefile import StateFileError, prepare_state_dir

    days = config.telegram.question_retention_days
    try:
        path = prepare_state_dir(config.telegram.state_dir, config.index.dir)
        answers = AnswerLog(path, retention_days=days, existing=True)
    except StateFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        if export is None:
            print(render.to_text(render.stats_doc(locale_lang(), answers.stats(time.time()))))
        else:
            count = answers.export(export, force=force)
            print(f"wrote {count} unsure, not-covered or 👎 question(s) to {export}")
    except FileExistsError:
        print(f"error: {export} exists (--force replaces it)", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot write {export}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except sqlite3.Error as exc:
        print(f"error: cannot read {answers.path}: {exc}", file=sys.stderr)
        return 2
    finally:
        answers.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python bot.py",
        description="Answer questions about the indexed news articles in Telegram (TELEGRAM_BOT_TOKEN set) "
        "or in the terminal (--console, or no token).",
    )
    parser.add_argument("--console", action="store_true", help="chat in the terminal instead of Telegram")
    parser.add_argument("--config", type=Path, help="config file (default: $QA_CONFIG, else config.toml)")
    parser.add_argument("--debug", action="store_true", help="debug logging (includes message texts)")
    commands = parser.add_subparsers(dest="command", metavar="{stats}")
    stats = commands.add_parser(
        "stats", help="questions, answered share, votes, time to answer (as /stats); --export for curation"
    )
    # SUPPRESS: `bot.py --config X stats` keeps X instead of the subcommand's default.
    stats.add_argument(
        "--config", type=Path, default=argparse.SUPPRESS, help="config file (default: $QA_CONFIG, else config.toml)"
    )
    stats.add_argument(
        "--export", type=Path, metavar="FILE.jsonl", help="write the unsure, not-covered and 👎 questions as JSON lines"
    )
    stats.add_argument("--force", action="store_true", help="let --export replace an existing file")
    args = parser.parse_args(argv)
    # Opt in to PTB's future timedelta `retry_after`: no deprecation warning on every 429.
    os.environ.setdefault("PTB_TIMEDELTA", "1")

    from telegram_bot.logs import redact, setup_logging

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    token = (config.telegram_token or "").strip()
    setup_logging(debug=args.debug, secrets=[token])
    signal.signal(signal.SIGTERM, _interrupt)
    console = args.console or not token
    if console and not args.console and args.command is None:
        log.info("TELEGRAM_BOT_TOKEN is not set: answering on the console (stdin) instead of Telegram")

    from index.build import BuildError
    from index.publish import BuildLockedError
    from telegram_bot.pipeline import ensure_index

    try:
        if args.command == "stats":
            return _run_stats(config, args.export, args.force)
        ensure_index(config, progress=_progress())
        return _run_console(config) if console else _run_bot(config, token)
    except (BuildError, BuildLockedError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the last line of defence: one redacted line, details in --debug
        if args.debug:
            log.exception("fatal error")
        print(redact(f"error: {type(exc).__name__}: {exc}", [token]), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
