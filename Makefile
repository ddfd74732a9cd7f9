# sashad: the two commands of the README's quick start, and their parts.
#
#   make run    build in release mode, install the pinned Claude Code CLI if missing, and serve
#               on 127.0.0.1:3001 with data under ./data
#   make test   install the pinned CLI, check formatting and lints, run every test

CLI_DIR := tools/claude
CLI     := $(CLI_DIR)/node_modules/.bin/claude
CARGO   ?= cargo

.PHONY: run test cli build lint unit-and-integration bench clean-cli

run: build cli
	./target/release/sashad serve

build:
	$(CARGO) build --release --locked

# The pinned CLI (version and lockfile in tools/claude), installed with `npm ci` so the exact
# tarball the lockfile names is used. Reinstalled when the pin changes.
cli: $(CLI)

$(CLI): $(CLI_DIR)/package.json $(CLI_DIR)/package-lock.json
	cd $(CLI_DIR) && npm ci --no-audit --no-fund
	@test -x $(CLI) || { echo "npm did not install $(CLI)"; exit 1; }
	@touch -h $(CLI)

test: cli lint unit-and-integration

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

unit-and-integration:
	SASHAD_TEST_CLAUDE_BIN=$(abspath $(CLI)) $(CARGO) test --locked --all-targets

# Benchmarks (figures go in BENCHMARKS.md): the hot path piece by piece, then the load harness
# (the release daemon with the fake CLI flooding its sockets).
bench:
	$(CARGO) build --release --locked --example fake_claude
	$(CARGO) bench --locked --bench hot_path
	$(CARGO) bench --locked --bench load

clean-cli:
	rm -rf $(CLI_DIR)/node_modules
