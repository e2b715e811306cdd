# Two commands set everything up from nothing: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
UV_VERSION ?= 0.13.9

.PHONY: setup browser demo test test-fast lock clean

# uv resolves and installs the same lock from PyPI in about 35 s where pip takes about 110 s (measured on 2
# cores, README "Install"); pip is the fallback where uv cannot be installed or fails. Bytecode is compiled at
# install: PYTHONDONTWRITEBYTECODE is set on these machines, and without it every process (each Ray worker)
# compiles torch again on import. torchattacks >= 3.4 pins requests~=2.25 (clashes with ray and mlflow); it
# needs nothing else we lack, so it goes in with --no-deps.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	if $(BIN)/pip install -q uv==$(UV_VERSION) 2>/dev/null && \
	   $(BIN)/uv pip install -q --python $(BIN)/python --compile-bytecode -c requirements.lock -e '.[test]' && \
	   $(BIN)/uv pip install -q --python $(BIN)/python --compile-bytecode --no-deps -c requirements.lock torchattacks; \
	then echo "setup: installed with uv"; \
	else echo "setup: uv unavailable or failed, installing with pip"; \
	  $(BIN)/pip install -q -c requirements.lock -e '.[test]' && \
	  $(BIN)/pip install -q --no-deps -c requirements.lock torchattacks; fi
	touch $(STAMP)

setup: $(STAMP)

# The report's browser test drives Debian's chromium: installed here when missing and we may (root or
# passwordless sudo, apt-get); never fails the build, the test then skips and says why.
APT := env DEBIAN_FRONTEND=noninteractive apt-get -y -qq -o Dpkg::Use-Pty=0
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; \
	  else echo "browser: no chromium and no root to install it: the browser test will skip"; exit 0; fi; \
	  command -v apt-get >/dev/null 2>&1 || { echo "browser: no chromium and no apt-get: the browser test will skip"; exit 0; }; \
	  echo "browser: installing Debian's chromium for the report's browser test"; \
	  { $$SUDO $(APT) install --no-install-recommends chromium >/dev/null 2>&1 || \
	    { $$SUDO $(APT) update >/dev/null 2>&1 && $$SUDO $(APT) install --no-install-recommends chromium >/dev/null 2>&1; }; } || \
	  echo "browser: apt-get install chromium failed: the browser test will skip"; }

demo: setup
	$(BIN)/conceptlens demo --config conf/demo.yaml

# Our sources' bytecode once, up front: where PYTHONDONTWRITEBYTECODE is set, every process (each Ray worker)
# would otherwise compile them again on import.
test: setup browser
	$(BIN)/python -m compileall -q platform jobs serve
	$(BIN)/python -m pytest -q -ra --durations=25  # the slowest tests: where the CI budget goes

test-fast: setup browser
	$(BIN)/python -m pytest -q -m "not slow"

lock: setup
	$(BIN)/pip freeze --exclude-editable --exclude uv | grep -v '^-e' > requirements.lock

clean:
	rm -rf runs .cache/conceptlens
