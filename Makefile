# The two commands a newcomer needs (README): `make run` and `make test`.
# CARGO_TARGET_DIR may point outside the clone (CI does) to reuse builds.

HTTP ?= 0.0.0.0:8080
RTMP ?= 0.0.0.0:1935

.PHONY: run test build check unit interop browser bench fuzz

run:
	scripts/deps.sh run
	cargo build --release -p streamgate
	cargo run --release -p streamgate -- --http $(HTTP) --rtmp $(RTMP)

build:
	cargo build --release -p streamgate

## Everything CI runs: formatting, lints, unit tests, interop with real peers, browser tests.
test:
	scripts/deps.sh test
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo build --release -p streamgate
	cargo test --workspace --release -- --test-threads=1
	cd player && npx vitest run
	$(MAKE) browser

unit:
	cargo test --workspace --lib

interop:
	cargo test --release -p streamgate --test interop --test hostile -- --test-threads=1

browser:
	node --test tests/browser/

bench:
	bench/run.sh

fuzz:
	scripts/fuzz.sh
