# The README's commands. `make demo` and `make test` each install whatever is missing first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEBIAN_FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
PYTEST_ARGS ?= -m "not slow"
ARGS ?=
# pip extras `make install` adds: .ci/run sets dev,peers (the loss tests' peer comparisons)
EXTRAS ?= dev
DATA_ROOT ?= $(or $(CONTRASTIVE_DATA_ROOT),data)

.PHONY: install data demo test test-all lint format bench gpu-wheels clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
	@$(PY) -c "import torch, torchvision; print('torch', torch.__version__, '| torchvision', torchvision.__version__)"
	@touch $(STAMP)

# Fashion-MNIST: Debian's package where apt is usable, else torchvision's download into data/.
data: install
	@if [ -f "$(DEBIAN_FMNIST)" ] || ls $(DATA_ROOT)/FashionMNIST/raw/train-images-idx3-ubyte* >/dev/null 2>&1; then \
		echo "Fashion-MNIST: present"; \
	elif command -v apt-get >/dev/null 2>&1 && { [ "$$(id -u)" = 0 ] || sudo -n true 2>/dev/null; }; then \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo -n); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq dataset-fashion-mnist; \
	else \
		echo "apt-get not usable; downloading Fashion-MNIST into $(DATA_ROOT)/ with torchvision"; \
		$(PY) -c "import torchvision; torchvision.datasets.FashionMNIST('$(DATA_ROOT)', download=True); torchvision.datasets.FashionMNIST('$(DATA_ROOT)', train=False, download=True)"; \
	fi

demo: data
	$(PY) scripts/demo.py $(ARGS)

test: data
	$(PY) -m pytest $(PYTEST_ARGS)

test-all: data
	$(PY) -m pytest -m "slow or not slow"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy contrastive

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: install
	$(PY) -m pip install --quiet -e '.[dev,bench]'

# The wheels the lent GPU machine lacks, into .whl/ for scripts/gpu_check.sh (docs/BENCHMARKS.md).
gpu-wheels:
	bash scripts/gpu_wheels.sh

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache .mypy_cache .ruff_cache
