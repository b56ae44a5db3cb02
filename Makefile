# bw-fleet: the two commands of README.md, and the pieces they are made of.
#   make lab    set up this machine, create the lab hosts, run site.yml on them
#   make test   set up this machine, lint, then unit + integration tests and the molecule scenarios at once
#   make stack-check [STACK=<recipe>]   install the recipe's Python layer for real (about 10 GB, 5 min);
#               must pass before a recipe change lands (docs/STACKS.md)
SHELL := /bin/bash
VENV := $(CURDIR)/.venv
export PATH := $(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PYTHONUNBUFFERED := 1

LAB_HOSTS ?= 2
SCENARIOS ?= fleet default

export BWLAB_ROOT := $(CURDIR)

.PHONY: lab test deps lab-image lab-up lab-down lint unit molecule check bench clean stack-check

lab: deps lab-up
	ansible-playbook site.yml -i inventories/lab

test: deps lint lab-image check

deps:
	./scripts/bootstrap

lab-image:
	lab/labctl image
	lab/repo build

lab-up: lab-image
	lab/labctl up --count $(LAB_HOSTS)
	lab/repo up
	lab/registry up

lab-down:
	lab/labctl down
	lab/repo down
	lab/registry down

lint:
	yamllint -s .
	ansible-lint --profile production --offline
	@# ansible-doc must render every module (a DOCUMENTATION that is not valid YAML fails here)
	ansible-doc -M library $(patsubst library/%.py,%,$(wildcard library/*.py)) >/dev/null

unit:
	pytest -q tests

molecule:
	@for s in $(SCENARIOS); do echo "== molecule test -s $$s"; molecule test -s $$s || exit 1; done

# pytest and the molecule scenarios at once, each into its own log (scripts/check says why).
check:
	SCENARIOS="$(SCENARIOS)" scripts/check

STACK ?= sglang-0.5.2-cu128-sm120
stack-check: deps
	scripts/stack-check $(STACK)

bench: deps
	bench/run

clean: lab-down
	rm -rf .cache/facts .pytest_cache
