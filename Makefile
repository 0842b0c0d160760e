# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
AXE    := tests/browser/node_modules/axe-core

.PHONY: run test lint format bench clean messages

$(STAMP): pyproject.toml scripts/system-packages telephony/media/rtp/_batch.c
	scripts/system-packages $(PYTHON)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Embedded defaults: private PostgreSQL under ./var, local blobs, development key.
# Private webhook targets are allowed only here, for local receivers.
run: $(STAMP)
	TELEPHONY_WEBHOOK_ALLOW_PRIVATE=true $(BIN)/telephony serve

test: lint $(AXE)
	scripts/system-packages --test $(PYTHON)
	$(BIN)/python -m pytest

# axe-core for tests/browser from the committed lock, when missing or older than the lock.
# npm may be one of the packages `--test` installs, so that check runs first here too.
# npm's configured `cafile` (a registry behind a TLS-inspecting proxy) is not always
# honoured by Node's own TLS: it is handed over as NODE_EXTRA_CA_CERTS unless one is set.
$(AXE): tests/browser/package-lock.json
	scripts/system-packages --test $(PYTHON)
	cafile=$$(npm config get cafile 2>/dev/null); \
	if [ -z "$${NODE_EXTRA_CA_CERTS:-}" ] && [ -f "$$cafile" ]; then \
		export NODE_EXTRA_CA_CERTS="$$cafile"; \
	fi; \
	npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
	touch $@

# Style, types (mypy --strict) and the layers of DESIGN.md (import-linter contracts).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# Benchmarks: each prints its figures and the ratio to its baseline, measured in the same run.
bench: $(STAMP)
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/rtp.py
	$(BIN)/python bench/download.py
	$(BIN)/python bench/control.py
	$(BIN)/python bench/portal.py
	$(BIN)/python bench/backup.py
	$(BIN)/python bench/nodes.py

# The one catalogue (telephony/i18n.py): extract every marked string, merge it into the
# Polish .po; tests/unit/test_i18n.py fails while one lacks its translation.
messages: $(STAMP)
	$(BIN)/pybabel extract -F telephony/locale/babel.cfg -k N_ --no-location --omit-header \
		-o var/messages.pot .
	$(BIN)/pybabel update -i var/messages.pot -d telephony/locale -l pl --no-fuzzy-matching \
		--ignore-obsolete

format: $(STAMP)
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info tests/browser/node_modules
