# Hardening: the heavy abuse cases and a bounded soak (docs/security.md).
.PHONY: test-abuse soak

test-abuse: install  ## audio bombs, header/socket floods, stream floods; asserts codes and memory bounds
	$(PY) -m pytest -m "abuse" -q

SOAK_SECONDS ?= 180
soak: install  ## steady mixed load with abuse inputs mixed in; reports errors and RSS start/peak/end
	$(PY) -m bench.soak --seconds $(SOAK_SECONDS)
