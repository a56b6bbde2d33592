"""The bot's handlers, one module per kind of update; `telegram_bot.app` registers them."""
