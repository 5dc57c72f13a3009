# make demo: set up .venv, install mapred, count the words of the Python standard library's sources.
# make test: install the system packages the tests need (scripts/system-deps.sh: as root with apt;
#            otherwise it says what will skip), set up .venv with the test extras, run the suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed

demo-corpus/.done: | $(VENV)/.installed
	$(BIN)/python scripts/demo_corpus.py demo-corpus
	touch $@

demo: $(VENV)/.installed demo-corpus/.done
	$(BIN)/mapred run wordcount demo-corpus -o demo-out --overwrite
	@echo "--- the 20 most frequent tokens of the standard library's sources:"
	@LC_ALL=C sort -t "$$(printf '\t')" -k2,2nr -k1,1 demo-out/part-* | head -n 20

test: $(VENV)/.installed-test
	scripts/system-deps.sh
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-test
	$(BIN)/ruff check mapred jobs tests bench
	$(BIN)/mypy

bench: $(VENV)/.installed
	$(BIN)/python bench/wordcount.py

clean:
	rm -rf demo-out demo-corpus
