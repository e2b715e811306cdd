# Two commands set everything up from nothing: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast lock clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c requirements.lock -e '.[test]'
	# torchattacks >= 3.4 pins requests~=2.25 (clashes with ray and mlflow); it needs nothing else we lack
	$(BIN)/pip install -q --no-deps -c requirements.lock torchattacks
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/conceptlens demo --config conf/demo.yaml

test: setup
	$(BIN)/python -m pytest -q -ra --durations=25  # the slowest tests: where the CI budget goes

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

lock: setup
	$(BIN)/pip freeze --exclude-editable | grep -v '^-e' > requirements.lock

clean:
	rm -rf runs .cache/conceptlens
