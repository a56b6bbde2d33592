"""Inline keyboard under answers and the callback data behind it.

Callback data is compact text well under Telegram's 64-byte limit::

    m:<vtag>:<token>:<offset>   More: the next page of the question stored under <token>
    c:<vtag>:<passage id>:<l>   Context: the passages around it (l = z|e, the reply's language)
    s:<vtag>:<passage id>:<l>   Source: the article it comes from

`vtag` names the index version the ids belong to: passage ids are only meaningful within
one version, so a button from before a rebuild is answered politely instead of showing
the wrong paragraph. Anything that does not parse (an old bot's buttons, forged data) is
treated the same way. The question text is too long for callback data, so "More" refers
to a bounded in-memory cache; after a restart those buttons are simply stale.
"""

from __future__ import annotations

import re
import secrets
from collections import OrderedDict
from dataclasses import dataclass

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from telegram_bot.i18n import t
from telegram_bot.pipeline import Kind, Reply

MORE, CONTEXT, SOURCE = "m", "c", "s"
MAX_CALLBACK_BYTES = 64

_MORE_RE = re.compile(r"m:([0-9a-f]{8}):([A-Za-z0-9_-]{1,16}):(\d{1,4})")
_ROW_RE = re.compile(r"([cs]):([0-9a-f]{8}):(\d{1,19}):([ze])")
_LANG_CODES = {"zh": "z", "en": "e"}
_CODE_LANGS = {v: k for k, v in _LANG_CODES.items()}


@dataclass(frozen=True)
class ButtonData:
    action: str
    vtag: str
    passage_id: int = 0
    token: str = ""
    offset: int = 0
    lang: str = "en"

    def encode(self) -> str:
        if self.action == MORE:
            data = f"{MORE}:{self.vtag}:{self.token}:{self.offset}"
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
    if match := _ROW_RE.fullmatch(data):
        return ButtonData(match[1], match[2], passage_id=int(match[3]), lang=_CODE_LANGS[match[4]])
    return None


class QuestionCache:
    """Recent questions by short random token, so "More" can re-ask them."""

    def __init__(self, size: int = 4096) -> None:
        self._items: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._size = size

    def put(self, question: str, lang: str) -> str:
        token = secrets.token_urlsafe(6)
        self._items[token] = (question, lang)
        if len(self._items) > self._size:
            self._items.popitem(last=False)
        return token

    def get(self, token: str) -> tuple[str, str] | None:
        item = self._items.get(token)
        if item is not None:
            self._items.move_to_end(token)
        return item


def keyboard(reply: Reply, vtag: str, token: str | None) -> InlineKeyboardMarkup | None:
    """More / Context / Source under an answer (none under help or no-answer texts)."""
    if reply.kind not in (Kind.ANSWER, Kind.WEAK) or not reply.hits:
        return None
    top = reply.hits[0].passage_id
    row = []
    if reply.kind is Kind.ANSWER and reply.has_more and token:
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
    return InlineKeyboardMarkup([row])
