# The two commands a new user runs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Everything the test suite exercises; `make demo` needs only the core.
TEST_EXTRAS ?= torch,openvino,tf,tflite,tflite-torch,images,dev,bench
# onnx2tf pins old numpy/onnx/protobuf and a second tensorflow, and tritonclient (only its model-config schema
# is used, by tests/test_triton.py) pins ml-dtypes and protobuf below ours: both installed without dependencies.
NO_DEPS := onnx2tf==1.29.24 tf-keras==2.21.0 tritonclient==2.73.0
# TensorRT's and cuda-python's APIs as mypy sees them (tests/stubs/make_stubs.py); not on the import path.
STUBS := $(VENV)/typestubs
# infer_compile as static tools see it: symlinks into compiler/, passes/, ... (tests/stubs/typeview.py).
# pyproject's [tool.mypy] mypy_path names both folders.
VIEW := $(VENV)/typeview

.PHONY: demo examples report-check test lint typecheck bench conformance install clean

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

$(STUBS)/.done: tests/stubs/make_stubs.py pyproject.toml | $(VENV)/.full
	rm -rf $(STUBS)
	$(BIN)/python tests/stubs/make_stubs.py $(STUBS)
	touch $@

install: $(VENV)/.full $(STUBS)/.done
	$(BIN)/python tests/stubs/typeview.py $(VIEW)

demo: $(VENV)/.core
	$(BIN)/infer-compile examples/tiny_cnn.onnx --target auto -o out/tiny_cnn.onnx --verify-passes
	$(BIN)/infer-compile verify examples/tiny_cnn.onnx out/tiny_cnn.onnx --samples 16

# examples/ as a user runs it (it calls `infer-compile` on PATH): with this checkout's venv first on PATH.
examples: $(VENV)/.full
	PATH="$(abspath $(BIN)):$$PATH" $(MAKE) -C examples verify

# The HTML build report rendered in headless Chromium (skipped, saying so, where Chromium is not installed).
report-check: $(VENV)/.full
	$(BIN)/python tests/render_report.py out/report

test: $(VENV)/.full typecheck
	$(BIN)/ruff check .
	$(BIN)/pytest -n 2 --dist loadfile --durations=15

# ONNX's backend conformance cases through every sweep (CI runs the onnxruntime fp32 one in `make test`).
conformance: $(VENV)/.full
	$(BIN)/python -m tests.conformance --sweep all

lint: $(VENV)/.full
	$(BIN)/ruff check .

# mypy over the whole package (see pyproject [tool.mypy]); the view is rewritten each time, so a new module
# needs no step, and messages name the repository files.
typecheck: $(STUBS)/.done
	$(BIN)/python tests/stubs/typeview.py $(VIEW) --mypy

bench: $(VENV)/.full
	$(BIN)/python bench/passes.py
	$(BIN)/python bench/int8.py
	$(BIN)/python bench/openvino_int8.py
	$(BIN)/python bench/tflite_target.py
	$(BIN)/python bench/build_cache.py
	$(BIN)/python bench/final_check.py
	$(BIN)/python bench/calibration_memory.py
	$(BIN)/python bench/calibration_cost.py
	$(BIN)/python bench/large_model.py
	$(BIN)/python bench/reliability.py

clean:
	rm -rf out build dist *.egg-info .pytest_cache .ruff_cache
