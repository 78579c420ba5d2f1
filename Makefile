# Two commands set everything up on a fresh machine:
#   make demo   - run the reference overcharge sequence on the simulated station
#   make test   - lint, type-check and run the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo serve test lint typecheck pytest bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/bench run sequences/r100/overcharge.yaml --station stations/sim.yaml

# The simulated station served over socketcand, TCP SCPI and a pty (docs/served.md); Ctrl-C stops.
serve: $(STAMP)
	$(BIN)/bench sim serve --station stations/sim-served.yaml

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# One worker per core; the sequence items stay together on one (docs/campaign.md, "pytest").
# The 20 slowest tests are listed at the end, so every run shows where the time goes.
pytest: $(STAMP)
	$(BIN)/pytest -n auto --durations=20

test: lint typecheck pytest

# Every benchmark, one after the other (tens of minutes): one JSON table in
# benchmarks/results/latest.json, and its markdown in benchmarks/README.md ("Last table").
# `make test` runs each one's short --smoke mode (tests/test_benchmarks_smoke.py).
bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py --readme

clean:
	rm -rf $(VENV) reports/*/ .pytest_cache .mypy_cache .ruff_cache
