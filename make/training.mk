# Targets every chapter 2 iris training directory shares. Its Makefile sets NAME and TRAIN_ARGS, then includes this.
ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST)))/..)
IMAGE := mlpatterns/$(NAME):0.1.0

.PHONY: train build run test

# Train locally into models/ at the repository root (skipped when the model is up to date).
train:
	cd $(ROOT) && $(MAKE) setup && .venv/bin/python -m mlpatterns.training.iris $(TRAIN_ARGS)

# The training job as an image; `make run` writes the model into models/ through a bind mount.
build:
	$(MAKE) -f $(ROOT)/make/pattern.mk base
	docker build -f Dockerfile -t $(IMAGE) $(ROOT)

run:
	mkdir -p $(ROOT)/models
	docker run --rm --user "$$(id -u):$$(id -g)" -v $(ROOT)/models:/app/models $(IMAGE)

test:
	cd $(ROOT) && $(MAKE) setup && .venv/bin/python -m pytest $(CURDIR)
