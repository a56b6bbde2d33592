"""The Telegram face of the QA service: answer pipeline, HTML rendering, handlers.

Layering: this package imports retrieval, index, corpus and settings; nothing below it
imports this package. `bot.py` is the entry point.
"""
