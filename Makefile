VENV ?= .venv
PYTHON ?= python3
PIP = $(VENV)/bin/pip install -q -c constraints.txt

.PHONY: demo test clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip

# Stamp files make re-runs cheap; they depend on pyproject.toml so a new dependency reinstalls.
$(VENV)/.installed: $(VENV)/bin/python pyproject.toml constraints.txt
	$(PIP) -e '.[asr]'
	touch $@

$(VENV)/.installed-test: $(VENV)/bin/python pyproject.toml constraints.txt
	$(PIP) -e '.[test]'
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/hubertkit demo

test: $(VENV)/.installed-test
	$(VENV)/bin/python -m pytest -q

clean:
	rm -rf $(VENV) demo_out
