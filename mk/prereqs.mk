# What the README's commands need, checked up front (included by the Makefile, which defines PYTHON).
#   prereqs   Python 3.11+ with venv (required; checked before the virtualenv is made), then a
#             report of the optional tools: apt-get (make check-deploy, tts, test-browser) and espeak-ng
#             (11 tests speak with it and skip without it, saying so)
.PHONY: prereqs check-python

check-python:
	@if ! command -v "$(PYTHON)" >/dev/null 2>&1; then \
		echo "make: no Python found (looked for python3.11, then python3; PYTHON=$(PYTHON))." >&2; \
		echo "      Install Python 3.11 (Debian/Ubuntu: apt-get install python3.11 python3.11-venv;" >&2; \
		echo "      macOS: brew install python@3.11; or pyenv install 3.11), or name one: make PYTHON=/path/to/python3.11" >&2; \
		exit 1; fi
	@if ! "$(PYTHON)" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then \
		echo "make: $(PYTHON) is $$("$(PYTHON)" --version 2>&1); this project needs Python 3.11 or newer." >&2; \
		echo "      Install python3.11 and run again, or name one: make PYTHON=/path/to/python3.11" >&2; \
		exit 1; fi
	@if ! "$(PYTHON)" -c 'import venv, ensurepip' 2>/dev/null; then \
		echo "make: $(PYTHON) cannot make a virtualenv (no venv/ensurepip module)." >&2; \
		echo "      Debian/Ubuntu: apt-get install python3.$$("$(PYTHON)" -c 'import sys; print(sys.version_info[1])')-venv" >&2; \
		exit 1; fi
	@"$(PYTHON)" -c 'import sys; v = sys.version_info; sys.exit(0) if v[:2] == (3, 11) else \
		print(f"make: note: using Python {v[0]}.{v[1]}; requirements.lock was resolved and tested on 3.11")'

prereqs: check-python
	@echo "python:    $(PYTHON) ($$("$(PYTHON)" --version 2>&1)) - ok"
	@if command -v apt-get >/dev/null 2>&1; then echo "apt-get:   found - make check-deploy (part of make test), make tts and make test-browser can fetch what they need"; \
	elif [ -x "$(DEPLOY_TOOLS)/bin/kubectl" ] && [ -x "$(DEPLOY_TOOLS)/bin/promtool" ]; then echo "apt-get:   missing, but kubectl and promtool are in $(DEPLOY_TOOLS)/bin - make test can run"; \
	else echo "apt-get:   missing - make test's deployment checks need kubectl and promtool in $(DEPLOY_TOOLS)/bin; without them run make test CHECK_DEPLOY=0"; fi
	@if command -v espeak-ng >/dev/null 2>&1; then echo "espeak-ng: found - every test runs"; \
	else echo "espeak-ng: missing - 11 tests that synthesise speech skip and say so (make tts installs it, with apt-get)"; fi
