# `make demo` and `make test` each set up .venv on first use (idempotent), then run.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PIP_ARGS ?=  # more pip options, e.g. --extra-index-url https://download.pytorch.org/whl/cpu (torch's CPU wheel)
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lapnet-installed

.PHONY: demo test bench clean

# A .venv without a working pip (a `python -m venv` killed half-way) or made by a Python older
# than 3.11 is made again; no Python 3.11 at all is one line and exit 2.
NEEDS_311 := import sys; sys.exit(sys.version_info[:2] < (3, 11))
$(STAMP): pyproject.toml constraints.txt
	@$(PY) -c 'import pip; $(NEEDS_311)' 2>/dev/null || { \
	  "$(PYTHON)" -c '$(NEEDS_311)' 2>/dev/null || { \
	    echo "make: lapnet needs Python 3.11 or newer; '$(PYTHON)' is not (give PYTHON=/path/to/python3.11)" >&2; exit 2; }; \
	  rm -rf $(VENV) && "$(PYTHON)" -m venv $(VENV); }
	$(PY) -m pip install -q --disable-pip-version-check $(PIP_ARGS) -c constraints.txt -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/lapnet demo --force  # re-running refreshes runs/demo (only the demo's own files)

test: $(STAMP)
	$(PY) -m pytest -q -rs -n 2 --dist loadgroup  # -rs: each skipped test's reason

# The benchmarks print ratios against a peer measured side by side (tens of minutes on 2 cores:
# race_real.py alone takes about 15). Without ../shared/data/f1 the real-race ones say so and
# are skipped. The text benchmark
# needs about 1 MB of English prose: `make bench TEXT=corpus.txt` (skipped without it).
bench: $(STAMP)
	$(PY) benchmarks/engine.py
	$(PY) benchmarks/simulate.py
	$(PY) benchmarks/race.py
	$(PY) benchmarks/race_real.py
	$(PY) benchmarks/race_length.py
	$(PY) benchmarks/adding.py
	@if [ -n "$(TEXT)" ]; then $(PY) benchmarks/text.py "$(TEXT)"; \
	 else echo "benchmarks/text.py skipped: give TEXT=<about 1 MB of English prose>"; fi

# The virtual environment and caches only: runs/ holds your trained models and is kept.
clean:
	rm -rf $(VENV) .pytest_cache
