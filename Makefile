# Convenience targets; each calls the script that does the work (scripts/ install what they need).
.PHONY: demo test bench deb boot-test lock
demo:
	bash scripts/demo
test:
	bash scripts/test
bench:
	bash scripts/bench
deb:
	bash packaging/build-debs
boot-test:
	bash packaging/build-debs && bash packaging/boot-test
# the lock (requirements/*.txt) compiled again from pyproject.toml and packaging/*/dependencies with the venv's
# pinned uv, keeping the pins that still fit; `make lock LOCK_ARGS=--upgrade` moves everything to today's newest
lock:
	bash -c 'source scripts/bootstrap && python scripts/lock "$$@"' lock $(LOCK_ARGS)
