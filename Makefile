# Herald's two commands: `make up` runs it, `make test` tests it. Both start from a bare clone.
UV := ./scripts/uv

.PHONY: up test test-faults test-unit lint bench install clean help

help:
	@echo "make up     install, start RabbitMQ + PostgreSQL, migrate, run the four services (Ctrl-C stops)"
	@echo "make test   install and run the whole test suite on a real RabbitMQ and PostgreSQL"
	@echo "make test-faults  the long fault suite (every SIGKILL, broker/database outages, provider faults)"
	@echo "make bench  run the benchmarks under bench/ (make bench-sender etc. for one)"
	@echo "make clean  remove .herald/ (local broker and database data, demo tenant)"

install:
	$(UV) sync --frozen

up: install
	$(UV) run --frozen python -m devtools.up

test: install
	$(UV) run --frozen ruff check herald shared services devtools tests bench
	$(UV) run --frozen pytest

test-faults: install  ## the long fault suite (issue 14): every fault under a mixed load, table at the end
	$(UV) run --frozen pytest tests/faults -p no:cacheprovider -rA

lint: install
	$(UV) run --frozen ruff check herald shared services devtools tests bench
	$(UV) run --frozen ruff format --check herald shared services devtools tests bench

test-unit: install
	$(UV) run --frozen pytest tests/unit

bench: install  ## every benchmark, one after another (each starts its own broker and database)
	$(UV) run --frozen python -m bench.first_slice
	$(UV) run --frozen python -m bench.sender
	$(UV) run --frozen python -m bench.ingest
	$(UV) run --frozen python -m bench.scheduler
	$(UV) run --frozen python -m bench.gateways

bench-%: install  ## one benchmark: make bench-sender, bench-ingest, bench-scheduler, bench-gateways, bench-first_slice
	$(UV) run --frozen python -m bench.$*

clean:
	rm -rf .herald
