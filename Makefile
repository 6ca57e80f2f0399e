# The two commands of the README: `make run` and `make test`.
.PHONY: run dev test test-services
run:
	./scripts/run
# `make run` with Django's auto-reloading development server instead of gunicorn (for work on the code).
dev:
	./scripts/run --dev
test:
	./scripts/test
# The tests marked `services`, against real PostgreSQL + Redis started on loopback.
test-services:
	./scripts/bootstrap
	./scripts/with-services .venv/bin/python -m pytest -m services
