# The two commands: `make run` starts the broker (on 127.0.0.1; ARGS="--host ..." to expose it),
# `make test` runs the whole suite.
# Both create .venv and install the pinned dependencies when they are missing.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): requirements.lock pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q -r requirements.lock
	$(VENV)/bin/python -m pip install -q --no-deps -e .
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/robustmq serve $(ARGS)

# The suite starts with the linters: code that ruff would change does not land.
test: lint
	$(VENV)/bin/python -m pytest -q $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check robustmq api tests bench sdk
	$(VENV)/bin/ruff format --check robustmq api tests bench sdk

bench: $(STAMP)
	$(VENV)/bin/python -m bench $(ARGS)

clean:
	rm -rf $(VENV) data
