# The two commands a new user needs (see README):
#   make demo   set up the machine and run the end-to-end demo
#   make test   set up the machine and run the full test suite
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test bench colcon clean

setup:
	@./scripts/setup.sh

demo: setup
	$(BIN)/uwm-demo $(ARGS)

test: setup
	$(BIN)/python -m pytest $(ARGS)

clean:
	rm -rf build install log .pytest_cache
