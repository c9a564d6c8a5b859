# The two commands of the README: `make demo` and `make test`. Each creates or reuses
# .venv and installs what it needs, pinned by constraints.txt (torch==2.13.0, CPU build).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
OUT    := out

.PHONY: demo test venv lock clean native native-sanitize test-oldest-ort

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

# The native ops (custom_ops/ -> custom_ops/build/release/libwaveopt_ops.so); incremental.
# The ONNX Runtime headers are fetched once into ~/.cache/waveopt (npm pack, sha256-checked).
native: $(STAMP)
	$(BIN)/waveopt ops build

# Export the built-in demo model, optimize it (checked against the original in ORT; the
# int8 model by the quantization guard on the demo mels), vocode demo mels with it and
# benchmark every form.
demo: $(STAMP) native
	mkdir -p $(OUT)
	$(BIN)/waveopt export --demo -o $(OUT)/demo.onnx --force
	$(BIN)/waveopt optimize $(OUT)/demo.onnx -o $(OUT)/demo.opt.onnx --check --force
	$(BIN)/waveopt optimize $(OUT)/demo.onnx -o $(OUT)/demo.native.onnx --target native --check --force
	$(BIN)/waveopt optimize $(OUT)/demo.onnx -o $(OUT)/demo.int8.onnx --target native --quant int8 --force
	$(BIN)/waveopt demo-mels -o $(OUT)/demo_mels.npy --frames 40 --force
	$(BIN)/waveopt vocode $(OUT)/demo.native.onnx $(OUT)/demo_mels.npy -o $(OUT)/demo.wav --force
	$(BIN)/waveopt vocode $(OUT)/demo.int8.onnx $(OUT)/demo_mels.npy -o $(OUT)/demo.int8.wav --force
	$(BIN)/waveopt ops info
	$(BIN)/waveopt bench $(OUT)/demo.onnx --frames 8
	$(BIN)/waveopt bench $(OUT)/demo.opt.onnx --frames 8
	$(BIN)/waveopt bench $(OUT)/demo.native.onnx --frames 8
	$(BIN)/waveopt bench $(OUT)/demo.int8.onnx --frames 8

test: $(STAMP) native
	$(BIN)/python -m pytest -q

# The kernel test and the ORT glue under ASan + UBSan, the thread team under TSan (about 3 minutes).
native-sanitize: $(STAMP)
	WAVEOPT_SANITIZE_TESTS=1 $(BIN)/python -m pytest -q tests/test_native_kernels.py tests/test_native_threads_tsan.py

# The oldest ONNX Runtime we claim (1.17, ORT API 17) in a second venv, with the op library of
# `make native`: the CLI's raw/portable/native files loaded and vocoded, the portable pipeline
# checked in ORT, the op's ORT glue (shapes, attributes, errors, FusedDense, dispatch). The
# per-ISA kernel-vs-torch sweeps are left to `make test` (same kernels, ~1 GB of data).
# ORT 1.17 needs numpy < 2, so numpy and what pins numpy >= 2 (ml_dtypes) are left to pip.
ORT_OLDEST       := 1.17.3
OLD_VENV         := .venv-ort117
OLD_STAMP        := $(OLD_VENV)/.installed
OLDEST_ORT_TESTS := tests/test_oldest_ort.py tests/test_pipeline_wavernn.py tests/test_native_op.py \
                    -k 'not loop_matches_torch_reference and not simd_paths'

$(OLD_STAMP): pyproject.toml constraints.txt
	test -x $(OLD_VENV)/bin/python || $(PYTHON) -m venv $(OLD_VENV)
	$(OLD_VENV)/bin/python -m pip install -q --upgrade pip
	grep -v -E '^(numpy|onnxruntime|ml_dtypes)==' constraints.txt > $(OLD_VENV)/constraints.txt
	$(OLD_VENV)/bin/python -m pip install -q -c $(OLD_VENV)/constraints.txt \
	    onnxruntime==$(ORT_OLDEST) 'numpy<2' -e '.[test]'
	touch $@

test-oldest-ort: $(OLD_STAMP) native
	$(OLD_VENV)/bin/python -c 'import onnxruntime as o; assert o.__version__ == "$(ORT_OLDEST)", o.__version__'
	$(OLD_VENV)/bin/python -m pytest -q $(OLDEST_ORT_TESTS)

# Re-pin constraints.txt from what the venv has now.
lock: $(STAMP)
	{ echo "# Exact versions installed by 'make' (pip -c). Regenerate with 'make lock' after changing pyproject.toml."; \
	  $(BIN)/python -m pip freeze --exclude-editable | sed 's/^torch==\(.*\)+cpu/torch==\1/'; } > constraints.txt

clean:
	rm -rf $(OUT) .pytest_cache custom_ops/build
