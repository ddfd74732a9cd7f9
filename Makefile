# sashad: the two commands of the README's quick start, and their parts.
#
#   make run    build in release mode, install the pinned Claude Code CLI if missing, and serve
#               on 127.0.0.1:3001 with data under ./data
#   make test   install the pinned CLI, check formatting and lints, run every test (the browser
#               tests last)
#   make demo   the whole product with no API key: the mock Anthropic API and a daemon pointed at
#               it (see tools/demo.sh)

CLI_DIR := tools/claude
CLI     := $(CLI_DIR)/node_modules/.bin/claude
CARGO   ?= cargo

.PHONY: run test cli build lint unit-and-integration bench clean-cli browser-test chromium demo

BROWSER_DIR := tests/browser
CHROMIUM    ?= /usr/bin/chromium

run: build cli
	./target/release/sashad serve

build:
	$(CARGO) build --release --locked

# The pinned CLI (version and lockfile in tools/claude), installed with `npm ci` so the exact
# tarball the lockfile names is used. Reinstalled when the pin changes. The Dockerfile runs the
# same script, so the image ships exactly the CLI the tests run.
cli: $(CLI)

$(CLI): $(CLI_DIR)/package.json $(CLI_DIR)/package-lock.json scripts/install-runtime.sh
	scripts/install-runtime.sh cli $(CLI_DIR)
	@touch -h $(CLI)

test: cli lint lint-packaging unit-and-integration browser-test

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

unit-and-integration:
	SASHAD_TEST_CLAUDE_BIN=$(abspath $(CLI)) $(CARGO) test --locked --all-targets

# Browser tests (tests/browser): Debian's chromium driven by playwright-core (pinned, installed
# with `npm ci`, which never downloads a browser), against the debug daemon, the real CLI and the
# mock API, which are built first.
browser-test: cli chromium $(BROWSER_DIR)/node_modules/.package-lock.json
	$(CARGO) build --locked --bin sashad --example mock_anthropic
	cd $(BROWSER_DIR) && CHROMIUM=$(CHROMIUM) npm test

$(BROWSER_DIR)/node_modules/.package-lock.json: $(BROWSER_DIR)/package.json $(BROWSER_DIR)/package-lock.json
	cd $(BROWSER_DIR) && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund
	@touch $@

# Debian's chromium, installed with apt-get when missing (as root; otherwise it says what to run).
chromium:
	@test -x $(CHROMIUM) || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; \
	  else echo "the browser tests need Debian's chromium: sudo apt-get install chromium"; exit 1; fi; }

# The mock Anthropic API on 127.0.0.1:3002 and a daemon on 127.0.0.1:3001 pointed at it, with
# data in ./data-demo; Ctrl-C stops both.
demo: cli
	$(CARGO) build --release --locked --bin sashad --example mock_anthropic
	./tools/demo.sh

# Benchmarks (figures go in BENCHMARKS.md): the hot path piece by piece, then the load harness
# (the release daemon with the fake CLI flooding its sockets).
bench:
	$(CARGO) build --release --locked --example fake_claude
	$(CARGO) bench --locked --bench hot_path
	$(CARGO) bench --locked --bench load

clean-cli:
	rm -rf $(CLI_DIR)/node_modules

# ---- Packaging: Dockerfile, docker-compose.yml, config/sashad.service, scripts/*.sh ----------
# hadolint and check-jsonschema come from PyPI into a local venv (pins in tools/lint); shellcheck
# and systemd-analyze are Debian's, installed by .ci/run. Outside CI a missing system tool skips
# its check with a note; in CI (CI=true) it fails. No Docker engine runs on the build machines:
# the image's layout is tested by tests/it/container.rs.
LINT_VENV     := tools/lint/venv
LINT_BIN      := $(LINT_VENV)/bin
SHELL_SCRIPTS := $(wildcard scripts/*.sh)
# A tool this check needs is missing: $(call lint-missing,TOOL,HOW TO INSTALL IT)
lint-missing = if [ "$(CI)" = true ]; then echo "$(1) is missing; $(2)" >&2; exit 1; \
	else echo "note: $(1) is not installed, check skipped ($(2))"; fi

.PHONY: lint-packaging lint-docker lint-compose lint-systemd lint-shell

lint-packaging: lint-docker lint-compose lint-systemd lint-shell

$(LINT_VENV)/.installed: tools/lint/requirements.txt
	python3 -m venv $(LINT_VENV)
	$(LINT_BIN)/pip install --quiet --disable-pip-version-check -r tools/lint/requirements.txt
	@touch $@

lint-docker: $(LINT_VENV)/.installed
	$(LINT_BIN)/hadolint --failure-threshold info Dockerfile

# The Compose schema always; `docker compose config` too where the compose plugin exists.
lint-compose: $(LINT_VENV)/.installed
	$(LINT_BIN)/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml
	@if docker compose version >/dev/null 2>&1; then \
		echo "docker compose config --quiet"; docker compose -f docker-compose.yml config --quiet; \
	else echo "note: no docker compose plugin here; docker-compose.yml checked against the schema only"; fi

# systemd-analyze verify on the unit, with ExecStart= pointed at the binary built here.
lint-systemd:
	@if command -v systemd-analyze >/dev/null; then \
		$(CARGO) build --locked --bin sashad && \
		scripts/check-systemd-unit.sh config/sashad.service target/debug/sashad; \
	else $(call lint-missing,systemd-analyze,apt-get install systemd); fi

lint-shell:
	@if command -v shellcheck >/dev/null; then \
		echo "shellcheck $(SHELL_SCRIPTS)"; shellcheck $(SHELL_SCRIPTS); \
	else $(call lint-missing,shellcheck,apt-get install shellcheck); fi
