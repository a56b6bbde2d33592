# Two commands matter: `make run` and `make test`. Everything installs itself first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: install run test test-fast lint bench soak index clean

install: $(STAMP)

# torch first, pinned to the CPU wheel: otherwise sentence-transformers pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check torch==2.13.0
	$(PIP) install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

index: install
	$(PY) -m index build

# Telegram bot when TELEGRAM_BOT_TOKEN is set, a console chat on stdin otherwise.
run: install
	$(PY) bot.py

test: install
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: install
	$(PY) -m bench.run

# 20 minutes of 50 chats and an operator's faults against the fake Bot API (bench/soak.py);
# e.g. `make soak SOAK_ARGS="--backend milvus"`.
soak: install
	$(PY) -m bench.soak --minutes 20 $(SOAK_ARGS)

clean:
	rm -rf var .pytest_cache
