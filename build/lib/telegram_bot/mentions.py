"""Whether a group message is addressed to the bot, and its text without the bot's handle.

Addressed = a command for us (`/ask` or `/ask@ourbot`, not `/ask@otherbot`), a mention of
our exact handle, or a reply to one of our messages. A handle inside a longer word does not
count: `@ourbotfans` and `x@ourbot.org` address someone else.
"""

from __future__ import annotations

import re

from telegram import Message, MessageEntity

# Telegram usernames are ASCII letters, digits and underscores; the handle must not continue
# into a longer name or an e-mail/domain (`@ourbot.org`), and must not follow a word or an '@'.
_HANDLE_EDGE_BEFORE = r"(?<![A-Za-z0-9_@.])"
_HANDLE_EDGE_AFTER = r"(?![A-Za-z0-9_]|\.[A-Za-z0-9])"


def handle_pattern(username: str) -> re.Pattern[str]:
    return re.compile(f"{_HANDLE_EDGE_BEFORE}@{re.escape(username)}{_HANDLE_EDGE_AFTER}", re.IGNORECASE)


def command_target(message: Message) -> str | None:
    """The `@name` a leading bot command is directed at ('' when none), or None for no command."""
    text = message.text or message.caption or ""
    entities = message.entities or message.caption_entities or ()
    for entity in entities:
        if entity.type == MessageEntity.BOT_COMMAND and entity.offset == 0:
            command = text[: entity.length]
            return command.partition("@")[2]
    return None


def addressed_text(message: Message, username: str, bot_id: int) -> tuple[str, bool]:
    """(text without the bot's @mentions, whether the message is addressed to the bot).

    Entity offsets are UTF-16, so mention entities are cut out in UTF-16.
    """
    text = message.text or ""
    addressed = False
    target = command_target(message)
    if target is not None and (not target or target.lower() == username.lower()):
        addressed = True
    spans: list[MessageEntity] = []
    for entity in message.entities or ():
        if (
            entity.type == MessageEntity.MENTION and message.parse_entity(entity).lower() == f"@{username}".lower()
        ) or (entity.type == MessageEntity.TEXT_MENTION and entity.user is not None and entity.user.id == bot_id):
            spans.append(entity)
    if spans:
        addressed = True
        encoded = text.encode("utf-16-le")
        for entity in sorted(spans, key=lambda e: e.offset, reverse=True):
            encoded = encoded[: 2 * entity.offset] + encoded[2 * (entity.offset + entity.length) :]
        text = encoded.decode("utf-16-le", errors="replace")
    if username:
        text, found = handle_pattern(username).subn(" ", text)
        addressed = addressed or found > 0
    replied = message.reply_to_message
    if replied is not None and replied.from_user is not None and replied.from_user.id == bot_id:
        addressed = True
    return " ".join(text.split()), addressed
