# Two entry points on a fresh machine: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Torch pinned to the release this project is tested with (CPU is enough; no GPU is needed).
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: demo test

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev,eval,openvino,ultralytics,cluster]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/reparam-export doctor
	$(BIN)/reparam-export build

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist worksteal --durations=15  # two workers; an idle one takes tests queued on the other
