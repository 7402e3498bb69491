# Two entry points on a fresh machine: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Torch pinned to the release this project is tested with (CPU is enough; no GPU is needed).
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: demo test

# Installed by uv (about 2.5x faster than pip here), configured as pip is (tools/install.py).
$(STAMP): pyproject.toml tools/install.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q uv==0.13.9
	$(BIN)/python tools/install.py $(BIN)/python $(TORCH) -e '.[dev,eval,openvino,ultralytics,cluster]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/reparam-export doctor
	$(BIN)/reparam-export build

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist worksteal --durations=15  # two workers; an idle one takes tests queued on the other
