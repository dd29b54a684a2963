# Two commands set everything up on a fresh machine:
#   make run    trains configs/fashion_mnist.py:quick and prints where the results are
#   make test   runs the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
WORKDIR ?= runs/fashion_mnist
FASHION_DIR := /usr/share/datasets/fashion-mnist
# Exact versions CI and `make` install (setup.cfg states the supported ranges). Keep in step with
# the install matrix in BUILD_NOTES.md.
PINS := tensorflow==2.21.0 tensorflow-datasets==4.9.10 tensorboard==2.21.0 keras==3.15.1 \
	ml-collections==1.1.0 absl-py==2.5.1 numpy==2.4.6 pillow==13.0.0 matplotlib==3.11.2 \
	pytest==9.2.0 pytest-xdist==3.8.0 protobuf==7.36.2 importlib_resources==7.1.0 \
	tensorboard-plugin-profile==2.24.2 xprof==2.24.2 \
	setuptools==65.5.0 wheel==0.48.0
# Test workers: the suite is CPU-bound; one per core.
TEST_WORKERS ?= 2

.PHONY: run test install data gcs-tools clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python setup.py setup.cfg Makefile
	printf '%s\n' $(PINS) > $(VENV)/constraints.txt
	$(BIN)/pip install --quiet -c $(VENV)/constraints.txt -e '.[test,profile]'
	touch $@

install: $(VENV)/.installed

# Fashion-MNIST for `make run`: Debian's package when we can install it, else TFDS downloads it
# at the first run (vae_dist looks in both places).
data:
	@if [ -f $(FASHION_DIR)/train-images-idx3-ubyte.gz ]; then \
	  echo "Fashion-MNIST: $(FASHION_DIR)"; \
	elif [ -f /etc/debian_version ] && [ "$$(id -u)" = 0 ]; then \
	  echo "Installing Debian's dataset-fashion-mnist"; \
	  apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1; apt-get install -y -q dataset-fashion-mnist >/dev/null; } || \
	    echo "apt-get could not install dataset-fashion-mnist; TFDS will try to download it"; \
	else \
	  echo "Fashion-MNIST: TFDS will download it on the first run"; \
	fi

# The gs:// tests (tests/test_gcs_*.py) run TensorFlow's GCS client against tests/gcs/emulator.py
# inside a private network + mount namespace: they need unshare and nsenter (util-linux), ip
# (iproute2) and openssl (a self-signed certificate for www.googleapis.com). Without root or these
# tools the tests are skipped with a message saying why.
gcs-tools:
	@missing=""; \
	for t in unshare:util-linux nsenter:util-linux ip:iproute2 openssl:openssl; do \
	  command -v $${t%%:*} >/dev/null 2>&1 || missing="$$missing $${t#*:}"; \
	done; \
	if [ -z "$$missing" ]; then \
	  :; \
	elif [ -f /etc/debian_version ] && [ "$$(id -u)" = 0 ]; then \
	  echo "Installing$$missing for the gs:// tests"; \
	  apt-get install -y -q $$missing >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1; apt-get install -y -q $$missing >/dev/null; } || \
	    echo "apt-get could not install$$missing; the gs:// tests will be skipped"; \
	else \
	  echo "Missing$$missing: the gs:// tests will be skipped"; \
	fi

run: install data
	$(BIN)/python -m vae_dist.main --config=configs/fashion_mnist.py:quick --workdir=$(WORKDIR)

test: install data gcs-tools
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) tests

clean:
	rm -rf $(VENV) runs
