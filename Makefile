# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench clean

$(BIN)/maild: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(BIN)/maild

run: $(BIN)/maild
	$(BIN)/maild --config config.toml run

lint: $(BIN)/maild
	$(BIN)/ruff check maild tests bench
	$(BIN)/ruff format --check maild tests bench
	$(BIN)/mypy
	$(BIN)/vulture

test: lint
	$(BIN)/pytest -q $(PYTEST_ARGS)

bench: $(BIN)/maild
	$(BIN)/python bench/throughput.py

clean:
	rm -rf $(VENV) var
