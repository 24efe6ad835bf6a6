PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export KERAS_BACKEND ?= tensorflow
export TF_CPP_MIN_LOG_LEVEL ?= 2
# As hvq_utils.runtime.TF_DEFAULTS: pytest imports TensorFlow before the package can set them.
export TF_CPU_ALLOCATOR_USE_BFC ?= true
export TF_ENABLE_ONEDNN_OPTS ?= 1

# The Kaggle user that owns the published kernels and the wheel dataset: make kaggle-push KAGGLE_USER=you
KAGGLE_USER ?= hvq-project
KAGGLE_PUSH_FLAGS ?=# e.g. --run 01, --public

.PHONY: demo test lint bench clean notebooks kaggle-push platforms

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[cpu,jax,dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

# Colab ships ipywidgets 7.7.1: the widget's tests also run against it, kept apart from the venv.
$(VENV)/ipywidgets7/ipywidgets: | $(BIN)/python
	$(BIN)/python -m pip install -q --no-deps --target $(VENV)/ipywidgets7 ipywidgets==7.7.1 ipython_genutils==0.2.0

lint: $(VENV)/.installed
	$(BIN)/ruff check hvq_utils tests bench tools

test: $(VENV)/.installed $(VENV)/ipywidgets7/ipywidgets lint
	$(BIN)/python -m pytest -q

# Stand-ins of Colab's and Kaggle's GPU and TPU images (data/platforms.json): each one's Python and
# packages, the notebooks' install cell, notebooks 01-07 at the smoke preset; then the lowest versions
# pyproject.toml accepts. Built under .platforms/ and reused while data/platforms.json is unchanged.
platforms: $(VENV)/.installed
	$(BIN)/python tools/platforms.py

demo: $(VENV)/.installed
	$(BIN)/python -m hvq_utils demo --out runs/demo

bench: $(VENV)/.installed
	$(BIN)/python bench/data_prep.py
	$(BIN)/python bench/vqvae.py --preset full --batch 2
	$(BIN)/python bench/vqvae.py --preset full --batch 2 --set encoder=shared
	for level in top middle bottom; do $(BIN)/python bench/prior.py --preset full --level $$level; done
	$(BIN)/python bench/sampling.py --preset full --n 10 --backend tensorflow
	$(BIN)/python bench/sampling.py --preset full --n 10 --backend jax
	$(BIN)/python bench/quality.py --out runs/quality.json --markdown runs/quality.md

# Rewrites every notebook's install cell, badges and accelerator metadata, and kaggle/*/kernel-metadata.json.
notebooks: $(VENV)/.installed
	$(BIN)/python -m hvq_utils.release notebooks

# Needs the `kaggle` command (pip install -U "kaggle>=2.2.5", which has --no-run) and Kaggle credentials.
kaggle-push: $(VENV)/.installed
	$(BIN)/python -m hvq_utils.release kaggle-push --owner $(KAGGLE_USER) $(KAGGLE_PUSH_FLAGS)

clean:
	rm -rf runs .pytest_cache
