"""Inline keyboard under answers and the callback data behind it.

Callback data is compact text well under Telegram's 64-byte limit::

    m:<vtag>:<token>:<offset>   More: the next page of the question stored under <token>
    c:<vtag>:<passage id>:<l>   Context: the passages around it (l = z|e, the reply's language)
    s:<vtag>:<passage id>:<l>   Source: the article it comes from
    v:<answer id>:<key>:<u|d>:<l>   👍 / 👎: a vote on the answer logged under <answer id>
    p:<page>:<l>                /sources: that page of the article list (of the live version)

`vtag` names the index version the ids belong to: passage ids are only meaningful within
one version, so a button from before a rebuild is answered politely instead of showing
the wrong paragraph. Anything that does not parse (an old bot's buttons, forged data) is
treated the same way. The question text is too long for callback data, so "More" refers
to a `telegram_bot.questionstore` token, kept in the state file so the buttons still work
after the bot restarts. Votes name an `AnswerLog` row, which outlives index versions; its
random `key` makes a vote on someone else's answer id unforgeable.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from telegram_bot.i18n import t
from telegram_bot.pipeline import QUOTED, Kind, Reply

MORE, CONTEXT, SOURCE, VOTE, SOURCES_PAGE = "m", "c", "s", "v", "p"
MAX_CALLBACK_BYTES = 64
UP, DOWN = "👍", "👎"

_MORE_RE = re.compile(r"m:([0-9a-f]{8}):([A-Za-z0-9_-]{1,16}):(\d{1,4})")
_ROW_RE = re.compile(r"([cs]):([0-9a-f]{8}):(\d{1,19}):([ze])")
_VOTE_RE = re.compile(r"v:(\d{1,19}):([A-Za-z0-9_-]{1,16}):([ud]):([ze])")
_PAGE_RE = re.compile(r"p:(\d{1,6}):([ze])")
_LANG_CODES = {"zh": "z", "en": "e"}
_CODE_LANGS = {v: k for k, v in _LANG_CODES.items()}


@dataclass(frozen=True)
class ButtonData:
    action: str
    vtag: str = ""
    passage_id: int = 0
    token: str = ""  # More: the stored question's token; votes: the answer's key
    offset: int = 0
    lang: str = "en"
    answer_id: int = 0
    up: bool = False

    def encode(self) -> str:
        if self.action == MORE:
            data = f"{MORE}:{self.vtag}:{self.token}:{self.offset}"
        elif self.action == VOTE:
            data = f"{VOTE}:{self.answer_id}:{self.token}:{'u' if self.up else 'd'}:{_LANG_CODES.get(self.lang, 'e')}"
        elif self.action == SOURCES_PAGE:
            data = f"{SOURCES_PAGE}:{self.offset}:{_LANG_CODES.get(self.lang, 'e')}"
        else:
            data = f"{self.action}:{self.vtag}:{self.passage_id}:{_LANG_CODES.get(self.lang, 'e')}"
        if len(data.encode("utf-8")) > MAX_CALLBACK_BYTES:
            raise ValueError("callback data over Telegram's 64-byte limit")
        return data


def decode(data: object) -> ButtonData | None:
    """The button's meaning, or None for anything we did not produce."""
    if not isinstance(data, str) or len(data) > MAX_CALLBACK_BYTES:
        return None
    if match := _MORE_RE.fullmatch(data):
        return ButtonData(MORE, match[1], token=match[2], offset=int(match[3]))
    if match := _PAGE_RE.fullmatch(data):
        return ButtonData(SOURCES_PAGE, "", offset=int(match[1]), lang=_CODE_LANGS[match[2]])
    if match := _ROW_RE.fullmatch(data):
        return ButtonData(match[1], match[2], passage_id=int(match[3]), lang=_CODE_LANGS[match[4]])
    if match := _VOTE_RE.fullmatch(data):
        return ButtonData(VOTE, answer_id=int(match[1]), token=match[2], up=match[3] == "u", lang=_CODE_LANGS[match[4]])
    return None


def keyboard(
    reply: Reply, vtag: str, token: str | None, votes: Sequence[InlineKeyboardButton] = ()
) -> InlineKeyboardMarkup | None:
    """More / Context / Source under an answer, and the `votes` row below them (none under
    help or no-answer texts)."""
    if reply.kind not in (*QUOTED, Kind.WEAK) or not reply.hits:
        return None
    top = reply.hits[0].passage_id
    row = []
    if reply.kind in QUOTED and reply.has_more and token:
        more = ButtonData(MORE, vtag, token=token, offset=reply.offset + len(reply.hits))
        row.append(InlineKeyboardButton(t(reply.lang, "btn_more"), callback_data=more.encode()))
    row.append(
        InlineKeyboardButton(
            t(reply.lang, "btn_context"),
            callback_data=ButtonData(CONTEXT, vtag, top, lang=reply.lang).encode(),
        )
    )
    row.append(
        InlineKeyboardButton(
            t(reply.lang, "btn_source"), callback_data=ButtonData(SOURCE, vtag, top, lang=reply.lang).encode()
        )
    )
    return InlineKeyboardMarkup([row, list(votes)] if votes else [row])


def vote_buttons(answer_id: int, key: str, lang: str) -> list[InlineKeyboardButton]:
    """👍 / 👎 for the answer logged under `answer_id`."""
    data = {up: ButtonData(VOTE, answer_id=answer_id, token=key, up=up, lang=lang).encode() for up in (True, False)}
    return [InlineKeyboardButton(UP, callback_data=data[True]), InlineKeyboardButton(DOWN, callback_data=data[False])]


def votes_of(markup: InlineKeyboardMarkup | None) -> list[InlineKeyboardButton]:
    """The vote buttons already under a message, so an edit ("More") keeps them."""
    if markup is None:
        return []
    return [
        button
        for row in markup.inline_keyboard
        for button in row
        if (data := decode(button.callback_data)) is not None and data.action == VOTE
    ]


def sources_keyboard(lang: str, page: int, pages: int) -> InlineKeyboardMarkup | None:
    """Newer / Older under a /sources page (none when everything fits on one)."""
    row = []
    if page > 0:
        data = ButtonData(SOURCES_PAGE, "", offset=page - 1, lang=lang).encode()
        row.append(InlineKeyboardButton(t(lang, "btn_newer"), callback_data=data))
    if page + 1 < pages:
        data = ButtonData(SOURCES_PAGE, "", offset=page + 1, lang=lang).encode()
        row.append(InlineKeyboardButton(t(lang, "btn_older"), callback_data=data))
    return InlineKeyboardMarkup([row]) if row else None
