# The two commands of the README: `make demo` and `make test`. Each creates or reuses
# .venv and installs what it needs, pinned by constraints.txt (torch==2.13.0, CPU build).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
OUT    := out

.PHONY: demo test venv lock clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

# Export the built-in demo model, optimize it (checked against the original in ORT),
# vocode demo mels with it and benchmark it.
demo: $(STAMP)
	mkdir -p $(OUT)
	$(BIN)/waveopt export --demo -o $(OUT)/demo.onnx --force
	$(BIN)/waveopt optimize $(OUT)/demo.onnx -o $(OUT)/demo.opt.onnx --check --force
	$(BIN)/waveopt demo-mels -o $(OUT)/demo_mels.npy --frames 40 --force
	$(BIN)/waveopt vocode $(OUT)/demo.opt.onnx $(OUT)/demo_mels.npy -o $(OUT)/demo.wav --force
	$(BIN)/waveopt bench $(OUT)/demo.onnx --frames 8
	$(BIN)/waveopt bench $(OUT)/demo.opt.onnx --frames 8

test: $(STAMP)
	$(BIN)/python -m pytest -q

# Re-pin constraints.txt from what the venv has now.
lock: $(STAMP)
	{ echo "# Exact versions installed by 'make' (pip -c). Regenerate with 'make lock' after changing pyproject.toml."; \
	  $(BIN)/python -m pip freeze --exclude-editable | sed 's/^torch==\(.*\)+cpu/torch==\1/'; } > constraints.txt

clean:
	rm -rf $(OUT) .pytest_cache
