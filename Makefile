VENV ?= .venv
PYTHON ?= python3
# The CPU build of PyTorch comes from PyTorch's own index (PyPI's Linux wheel is the CUDA
# build, several GB); `make test TORCH_INDEX=...` points elsewhere.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
PIP = $(VENV)/bin/pip install -q -c constraints.txt

.PHONY: demo test clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip

# torch alone first, from TORCH_INDEX; its dependencies come with hubertkit's from PyPI.
$(VENV)/.torch: $(VENV)/bin/python constraints.txt
	$(PIP) --no-deps --extra-index-url $(TORCH_INDEX) torch
	touch $@

# Stamp files make re-runs cheap; they depend on pyproject.toml so a new dependency reinstalls.
$(VENV)/.installed: $(VENV)/.torch pyproject.toml
	$(PIP) -e '.[asr]'
	touch $@

# the reference ABX and s3prl's copy of fairseq's HuBERT, without their torchaudio pins
# (tests/test_abx.py compiles the ABX's DTW; tests/test_model_reference.py runs the model)
$(VENV)/.installed-test: $(VENV)/.torch pyproject.toml
	$(PIP) -e '.[test]'
	$(PIP) --no-deps zerospeech-libriabx==1.0.5 espnet-s3prl==2026.5.14
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/hubertkit demo

test: $(VENV)/.installed-test
	$(VENV)/bin/python -m pytest -q

clean:
	rm -rf $(VENV) demo_out
