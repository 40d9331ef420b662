# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
.PHONY: setup demo test contracts bench fuzz crash clean

setup:
	@scripts/bootstrap.sh

demo: setup
	.venv/bin/python -m simulator.demo $(ARGS)

test:
	scripts/test.sh $(ARGS)

bench: setup
	.venv/bin/python -m benchmarks.run $(ARGS)

# The long fuzz campaign: a million inputs per parser (see tests/fuzz/__init__.py).
fuzz: setup
	.venv/bin/python -m tests.fuzz $(or $(ARGS),--inputs 1000000)

# The long crash campaign: 200 SIGKILLs of the real gateway (docs/reliability.md).
crash: setup
	.venv/bin/python -m tests.crash_campaign $(or $(ARGS),--kills 200 --seed 1)

contracts: setup
	node contracts/build.mjs

clean:
	rm -rf .venv node_modules .pytest_cache .mypy_cache .ruff_cache
