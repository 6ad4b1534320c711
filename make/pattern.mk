# Targets every pattern directory shares. A pattern's Makefile sets PATTERN and IMAGES, then includes this.
# The book's targets (build, run, stop, c_up, c_down, deploy, delete) drive Docker and kubectl; up, demo,
# test and bench run the pattern locally through the repository's Makefile.
ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST)))/..)
BASE_IMAGE := mlpatterns/base:0.1.0
TRAIN_BASE_IMAGE := mlpatterns/train-base:0.1.0
# A pattern that serves the digits CNN sets DIGITS_MODEL := 1 and copies the model from this image (trained
# once by chapter2_training/cifar10's pipeline): COPY --from=mlpatterns/cifar10_model:0.1.0 /app/models/cifar10 ...
DIGITS_MODEL_IMAGE := mlpatterns/cifar10_model:0.1.0
# PYTHON_IMAGE=<image> builds the bases on another CPython 3.11.3+ image than python:3.11-slim.
BASE_ARGS := $(if $(PYTHON_IMAGE),--build-arg PYTHON_IMAGE=$(PYTHON_IMAGE))
COMPOSE := docker compose -f docker-compose.yml
NAME := $(notdir $(PATTERN))

.PHONY: base build run stop c_up c_down deploy delete up demo test bench

base:
	docker build $(BASE_ARGS) -f $(ROOT)/docker/base.Dockerfile -t $(BASE_IMAGE) $(ROOT)
	docker build $(BASE_ARGS) -f $(ROOT)/docker/base.Dockerfile --target train -t $(TRAIN_BASE_IMAGE) $(ROOT)
ifdef DIGITS_MODEL
	docker build $(BASE_ARGS) -f $(ROOT)/chapter2_training/cifar10/Dockerfile --target model -t $(DIGITS_MODEL_IMAGE) $(ROOT)
endif

build: base
	$(COMPOSE) build

run:
	docker run -d --name $(NAME) $(RUN_ARGS) $(firstword $(IMAGES))

stop:
	docker rm -f $(NAME)

c_up:
	$(COMPOSE) up -d

c_down:
	$(COMPOSE) down

deploy:
	kubectl apply -f manifests/namespace.yml
	kubectl apply -f manifests/

delete:
	kubectl delete -f manifests/ --ignore-not-found

up demo test bench:
	$(MAKE) -C $(ROOT) $@ P=$(PATTERN)
