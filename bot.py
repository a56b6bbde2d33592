"""`python bot.py`: the Telegram bot (long polling), or a console chat without a token.

    TELEGRAM_BOT_TOKEN=123:abc python bot.py     # Telegram: long polling, or a webhook ([telegram] webhook_url)
    python bot.py --console                      # same answers in the terminal (stdin)
    python bot.py --config other.toml --debug
    python bot.py stats [--export FILE.jsonl [--force]]  # what /stats shows; export questions to curate
    python bot.py backup DIR                     # the corpus and the bot's state (votes…), online
    python bot.py restore DIR [--force]          # put them back; then the index is rebuilt

The token (and the webhook's secret) is read from the environment only and redacted from every
log line. When no index is published yet, or this program cannot read the one there, the bot
builds it in the background and says so to askers (`telegram_bot.serving`); the console builds
a missing one first. User errors (bad config, unusable corpus, rejected token) are one line on
stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from settings import Config, ConfigError, load_config, require_webhook_secret

log = logging.getLogger("telegram_bot")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM before the event loop runs (e.g. during an index build) stops like Ctrl-C."""
    raise KeyboardInterrupt


def _run_bot(config: Config, token: str, webhook_secret: str | None) -> int:
    from telegram.error import InvalidToken

    from index.backends import OPEN_ERRORS
    from telegram_bot.app import ALLOWED_UPDATES, build_application
    from telegram_bot.state import STATE_KEY
    from telegram_bot.webhook import run_webhook

    application = build_application(config, token)
    try:
        if webhook_secret is None:
            target = config.telegram.base_url or "api.telegram.org"
            log.info("starting long polling against %s", target.split("/bot")[0])
            application.run_polling(allowed_updates=ALLOWED_UPDATES, bootstrap_retries=-1, drop_pending_updates=False)
        else:
            run_webhook(application, config, webhook_secret, ALLOWED_UPDATES)
    except InvalidToken:
        print(
            "error: Telegram rejected the bot token: check TELEGRAM_BOT_TOKEN (and [telegram] base_url)",
            file=sys.stderr,
        )
        return 2
    except OPEN_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    fatal = application.bot_data[STATE_KEY].fatal
    if fatal is not None:
        print(f"error: {fatal}", file=sys.stderr)
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


def _run_backup(config: Config, command: str, directory: Path, force: bool) -> int:
    from telegram_bot.backup import BackupError, backup, restore

    try:
        if command == "backup":
            print(f"backed up {backup(config, directory).line()} to {directory}")
        else:
            summary = restore(config, directory, force=force)
            print(f"restored {summary.line()} from {directory}")
            print("next: `python -m index build` (or start the bot: it builds the index in the background)")
    except (BackupError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
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
    commands = parser.add_subparsers(dest="command", metavar="{stats,backup,restore}")
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
    for name, text in (
        ("backup", "copy the corpus and the bot's state (votes, answer log) into a new directory, online"),
        ("restore", "copy a backup's corpus and state back (then the index is rebuilt)"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument(
            "--config", type=Path, default=argparse.SUPPRESS, help="config file (default: $QA_CONFIG, else config.toml)"
        )
        sub.add_argument("directory", type=Path, metavar="DIR")
        if name == "restore":
            sub.add_argument("--force", action="store_true", help="overwrite a non-empty corpus and existing state")
    args = parser.parse_args(argv)
    # Opt in to PTB's future timedelta `retry_after`: no deprecation warning on every 429.
    os.environ.setdefault("PTB_TIMEDELTA", "1")

    from telegram_bot.logs import redact, setup_logging

    try:
        config = load_config(args.config)
        token = (config.telegram_token or "").strip()
        console = args.console or not token
        webhook_secret = None if console or args.command else require_webhook_secret(config)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    setup_logging(debug=args.debug, secrets=[token, webhook_secret or ""])
    signal.signal(signal.SIGTERM, _interrupt)
    if console and not args.console and args.command is None:
        log.info("TELEGRAM_BOT_TOKEN is not set: answering on the console (stdin) instead of Telegram")

    from index.build import BuildError
    from index.publish import BuildLockedError
    from telegram_bot.pipeline import ensure_index
    from telegram_bot.serving import build_progress

    try:
        if args.command == "stats":
            return _run_stats(config, args.export, args.force)
        if args.command in ("backup", "restore"):
            return _run_backup(config, args.command, args.directory, getattr(args, "force", False))
        if not console:
            return _run_bot(config, token, webhook_secret)
        ensure_index(config, progress=build_progress())
        return _run_console(config)
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
