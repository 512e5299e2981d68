# `make demo` and `make test` each set up .venv on first use (idempotent), then run.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lapnet-installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/lapnet demo --force  # re-running refreshes runs/demo (only the demo's own files)

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadgroup

# The benchmarks print ratios against a peer measured side by side. The text benchmark
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

clean:
	rm -rf $(VENV) runs .pytest_cache
