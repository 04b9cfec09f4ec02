# The two commands a newcomer needs (see README.md):
#   make up     install replikv and start a local cluster, showing its nodes' status
#   make test   install what the tests need and run them
PYTHON ?= python3

.PHONY: up test deps install buildtools

# recordclass (keyspace entries the garbage collector does not track) comes as source: pip
# compiles it, which needs gcc and the Python headers
buildtools:
	@if ! command -v gcc >/dev/null || ! $(PYTHON) -c "import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))"; then \
		echo "installing gcc and the Python headers from apt (a dependency compiles from source)"; \
		(apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc python3-dev >/dev/null || true; \
	fi

install: buildtools
	$(PYTHON) -m pip install -q -e .

up: install
	replikv up --mode leader --nodes 3 --data-dir .replikv

deps: buildtools
	@if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null || ! command -v redis-benchmark >/dev/null; then \
		echo "installing redis-server and redis-tools (redis-cli, redis-benchmark) from apt"; \
		(apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null; \
	fi
	@if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		echo "installing postgresql from apt (trigger sink tests)"; \
		(apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null || true; \
	fi
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
		echo "installing chromium and chromium-driver from apt (the dashboard's tests drive a headless browser)"; \
		(apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	fi
	$(PYTHON) -m pip install -q -e '.[test]'

test: deps
	$(PYTHON) -m pytest -q -p no:cacheprovider tests
