# The two commands of the README: `make run` and `make test`.
.PHONY: run test test-services
run:
	./scripts/run
test:
	./scripts/test
# The tests marked `services`, against real PostgreSQL + Redis started on loopback.
test-services:
	./scripts/bootstrap
	./scripts/with-services .venv/bin/python -m pytest -m services
