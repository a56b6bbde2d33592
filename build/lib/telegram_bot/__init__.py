"""The Telegram face of the QA service: answer pipeline, HTML rendering, handlers.

Layering: this package imports retrieval, index, corpus and settings; nothing below it
imports this package. `bot.py` is the entry point, `telegram_bot.app` builds the bot, the
handlers live in `telegram_bot.components`.
"""

from importlib import metadata


def app_version() -> str:
    """The installed package's version ("dev" when run from a checkout that is not installed)."""
    try:
        return metadata.version("crackdown-qa")
    except metadata.PackageNotFoundError:
        return "dev"
