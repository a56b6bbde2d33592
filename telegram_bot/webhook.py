"""Webhook mode: PTB's webhook server (tornado), bounded against hostile clients.

Telegram sends every update with the secret token given to `setWebhook`; PTB's handler answers
403 to a request without it (or with another) before the update is parsed, so such a request
causes nothing. Tornado's own limits are generous (100 MB bodies, an hour to send a request
head), and PTB builds its `HTTPServer` without options: tornado's `Configurable` defaults bound
every request this process accepts instead (Telegram's updates are a few KB).
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from telegram.ext import Application

from settings import Config, parse_listen

log = logging.getLogger("telegram_bot")

MAX_BODY_BYTES = 1_000_000
MAX_HEAD_BYTES = 16_384
HEAD_SECONDS = 10.0  # to send a request head (slowloris), and the longest idle keep-alive
BODY_SECONDS = 10.0


def bound_requests() -> None:
    """Limit the size and time of every request tornado's HTTP server accepts in this process."""
    from tornado.httpserver import HTTPServer

    HTTPServer.configure(
        None,
        max_header_size=MAX_HEAD_BYTES,
        max_body_size=MAX_BODY_BYTES,
        idle_connection_timeout=HEAD_SECONDS,
        body_timeout=BODY_SECONDS,
        decompress_request=False,
    )


def run_webhook(application: Application, config: Config, secret: str, allowed_updates: list[str]) -> None:
    """Register `[telegram] webhook_url` with Telegram and serve it on `webhook_listen` until stopped."""
    host, port = parse_listen(config.telegram.webhook_listen, "[telegram] webhook_listen")
    url = config.telegram.webhook_url
    bound_requests()
    log.info("starting the webhook server on %s:%d for %s", host, port, url)
    application.run_webhook(
        listen=host,
        port=port,
        url_path=urlsplit(url).path,
        webhook_url=url,
        secret_token=secret,
        allowed_updates=allowed_updates,
        drop_pending_updates=False,
        bootstrap_retries=-1,
    )
