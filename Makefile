# `make test` installs everything the suite needs (idempotent) and runs lint, types and tests.
PY ?= python3
PIP := $(PY) -m pip

.PHONY: test deps system-deps lint typecheck pytest docs bench

test: deps lint typecheck pytest

deps: system-deps
	$(PIP) install --quiet --disable-pip-version-check -e '.[dev,spark]'

# Java runs the Spark backend in local mode; install it only when missing.
system-deps:
	@command -v java >/dev/null 2>&1 || { \
	  echo "installing Java 17 for PySpark"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless; }
	@test -x /usr/bin/chromium || { \
	  echo "installing Chromium for the dashboard and map tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

lint:
	$(PY) -m ruff check src tests benchmarks

typecheck:
	$(PY) -m mypy

pytest:
	$(PY) -m pytest -q -n 2 -W ignore::DeprecationWarning

docs:
	$(PY) -c "from journeylens import schema, config; open('docs/schema.md','w').write(schema.schema_markdown()); open('docs/settings.md','w').write(config.settings_markdown())"

bench:
	$(PY) benchmarks/bench_import.py
