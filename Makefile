# The two commands in README: `make demo` and `make test`. Both set everything up from scratch.
UV ?= $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
PYTEST_ARGS ?=

.PHONY: bootstrap demo test lint bench fmt dist openapi

bootstrap:
	@bash scripts/bootstrap.sh

demo: bootstrap
	uv run engine demo $(DEMO_ARGS)

lint: bootstrap
	uv run ruff check engine bench tests
	uv run mypy

test: lint
	uv run pytest -q -p no:cacheprovider $(PYTEST_ARGS)

bench: bootstrap
	uv run python -m bench e2e --json
	uv run python -m bench dkim --json
	uv run python -m bench bounces --json
	uv run python -m bench enqueue --json

fmt:
	uv run ruff check --fix engine bench tests
	uv run ruff format engine bench tests

# The wheel (with the data files, docs and systemd files it installs) and the sdist, in dist/.
dist: bootstrap
	uv build -o dist

# The committed OpenAPI document and the Node client's types generated from it (a test fails while
# either is stale). Written through a temporary file so a failing export leaves the copy intact.
openapi: bootstrap
	uv run python -m engine.admin.export_openapi > clients/node/openapi.json.tmp
	mv clients/node/openapi.json.tmp clients/node/openapi.json
	cd clients/node && npm run --silent gen
