# Convenience targets; each calls the script that does the work (scripts/ install what they need).
.PHONY: demo test bench deb
demo:
	bash scripts/demo
test:
	bash scripts/test
bench:
	bash scripts/bench
deb:
	bash packaging/build-debs
