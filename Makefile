# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
.PHONY: setup demo test contracts bench clean

setup:
	@scripts/bootstrap.sh

demo: setup
	.venv/bin/python -m simulator.demo $(ARGS)

test:
	scripts/test.sh $(ARGS)

bench: setup
	.venv/bin/python -m benchmarks.run $(ARGS)

contracts: setup
	node contracts/build.mjs

clean:
	rm -rf .venv node_modules .pytest_cache .mypy_cache .ruff_cache
