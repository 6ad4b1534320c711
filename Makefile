# Run from the repository root. P names a pattern directory, e.g. P=chapter4_serving_patterns/web_single_pattern
PYTHON := .venv/bin/python
P ?=

.PHONY: help setup models demo up lint test images bench bench-peers clean

help:
	@echo "make demo            set up, then run every pattern's demo locally (P=<dir> for one)"
	@echo "make test            set up, lint (ruff), then run the whole test suite (TEST_WORKERS=2 processes)"
	@echo "make images          build every pattern's images with Docker and prove every container serves"
	@echo "make lint            ruff: lint and format check of the whole tree"
	@echo "make up P=<dir>      run a pattern locally until Ctrl-C (FREE_PORTS=1 if its ports are taken)"
	@echo "make bench P=<dir>   benchmark a serving pattern against its floors (its own bench.py, if it has one)"
	@echo "make bench           every serving pattern's bench in turn, a summary in build/bench/all.md"
	@echo "                     (BENCH_ARGS='--seconds 2 --rounds 1 --warmup 1': options for the benches)"
	@echo "make bench-peers     web_single beside MLServer, BentoML, Ray Serve (PEERS=mlserver,...; installs them from PyPI once)"
	@echo "make setup | models  install what is needed | (re)build the models that are out of date"

setup:
	@scripts/setup

models: setup

demo: setup
	$(PYTHON) -m mlpatterns.runner demo $(P)

up: setup
	@test -n "$(P)" || { echo "usage: make up P=<pattern dir>"; exit 2; }
	$(PYTHON) -m mlpatterns.runner up $(P) $(if $(FREE_PORTS),--free-ports)

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

# Two processes, each taking whole test files (a file's pattern is started once, in one of them): the tests mostly
# wait on servers, timeouts and expiries, so two at once take about 0.6x the time on two cores. TEST_WORKERS=0: one.
TEST_WORKERS ?= 2
test: lint
	$(PYTHON) -m pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile) $(P)

# The images tier: a private dockerd under build/docker/ unless DOCKER_HOST or /var/run/docker.sock answers.
images: setup
	@scripts/setup-images
	@rm -f build/images/report.txt
	MLPATTERNS_IMAGES=1 $(PYTHON) -m pytest -s -p no:cacheprovider tests/test_container_images.py; \
	  status=$$?; cat build/images/report.txt 2>/dev/null; exit $$status

# Without P: every serving pattern's bench (mlpatterns/bench/all.py).
bench: setup
	$(if $(P),$(if $(wildcard $(P)/bench.py),$(PYTHON) -m $(subst /,.,$(P:%/=%)).bench,$(PYTHON) -m mlpatterns.bench $(P)),$(PYTHON) -m mlpatterns.bench.all) $(BENCH_ARGS)

bench-peers: setup
	$(PYTHON) -m mlpatterns.bench.peers $(if $(PEERS),--peers $(PEERS))

clean:
	rm -rf models build .pytest_cache
