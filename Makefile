# Set-up and everyday commands. Only `python3` (3.11+) is needed on the machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: test demo lint install clean cjk-font

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,archive-sdk]'
	touch $(STAMP)

install: $(STAMP)

# Cards need a CJK font (SPEC §9). When none is found and we run as root with apt-get, install
# Debian's fonts-wqy-microhei; otherwise the demo draws no card and the card tests skip, each
# with one line (CI requires them).
cjk-font: $(STAMP)
	@$(PY) -c 'from bot.cards.fonts import find_font; find_font()' 2>/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing fonts-wqy-microhei (CJK font for cards)"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -qq fonts-wqy-microhei >/dev/null 2>&1 || \
	      { apt-get update -qq >/dev/null && apt-get install -y -qq fonts-wqy-microhei >/dev/null; }; \
	  else echo "no CJK font found: no cards, card tests skip (apt-get install fonts-wqy-microhei)"; fi; }

# Tests run in TEST_WORKERS processes (pytest-xdist), a test file per worker at a time; each
# PostgreSQL test has a schema of its own and every server listens on a port of its own, so
# workers do not meet. TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= 2

test: $(STAMP) cjk-font
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

demo: $(STAMP) cjk-font
	$(VENV)/bin/cohortbot demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) data/demo .pytest_cache .mypy_cache .ruff_cache
