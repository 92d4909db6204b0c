# The two commands a new user runs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Everything the test suite exercises; `make demo` needs only the core.
TEST_EXTRAS ?= torch,openvino,tf,tflite,images,dev,bench
# onnx2tf pins old numpy/onnx/protobuf and a second tensorflow: installed without its dependencies.
NO_DEPS := onnx2tf==1.29.24 tf-keras==2.21.0

.PHONY: demo test lint bench install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.core: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.full: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[$(TEST_EXTRAS)]"
	$(BIN)/pip install -q --no-deps $(NO_DEPS)
	touch $@ $(VENV)/.core

install: $(VENV)/.full

demo: $(VENV)/.core
	$(BIN)/infer-compile examples/tiny_cnn.onnx --target auto -o out/tiny_cnn.onnx --verify-passes
	$(BIN)/infer-compile verify examples/tiny_cnn.onnx out/tiny_cnn.onnx --samples 16

test: $(VENV)/.full
	$(BIN)/ruff check .
	$(BIN)/pytest -n 2 --dist loadfile --durations=15

lint: $(VENV)/.full
	$(BIN)/ruff check .

bench: $(VENV)/.full
	$(BIN)/python bench/passes.py
	$(BIN)/python bench/int8.py
	$(BIN)/python bench/openvino_int8.py
	$(BIN)/python bench/tflite_target.py
	$(BIN)/python bench/build_cache.py

clean:
	rm -rf out build dist *.egg-info .pytest_cache .ruff_cache
