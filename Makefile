# The two commands a newcomer needs: `make run` and `make test`.
.PHONY: run test install install-test bench check
PY := .venv/bin/python

run: install
	$(PY) -m devtools.sandbox

test: install-test
	bash scripts/test.sh $(ARGS)

bench: install-test
	$(PY) -m bench $(ARGS)

install:
	bash scripts/install.sh run

install-test:
	bash scripts/install.sh test
