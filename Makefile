# Convenience targets; each calls the script that does the work (scripts/ install what they need).
.PHONY: demo test bench deb boot-test
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
