"""The services the project talks to, faked on 127.0.0.1 for the tests and the benchmarks: the
Telegram Bot API (`fake_telegram`) and a Chinese news site with feeds (`news_site`).

Neither is part of the product (not installed, never chosen by a config); both the tests and
`bench/` import them, so neither imports the other's code.
"""
