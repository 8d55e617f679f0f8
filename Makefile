# Every entry point of envfarm. `make demo` and `make test` install whatever is missing first.
SHELL := /bin/bash
PY := .venv/bin/python
# `-P`: the checkout is not put first on sys.path. Its folders install as envfarm.tasks / envfarm.verifiers /
# envfarm.trainer, so a bare `import verifiers` must find Prime Intellect's library where it is installed, not
# the checkout's verifiers/ folder. Benchmarks run without it: `bench` is a folder of the checkout, not installed.
PYRUN := $(PY) -P
export PYTHONUNBUFFERED := 1
# The embedded defaults: Podman's Docker-API socket unless the user points DOCKER_HOST elsewhere.
export DOCKER_HOST ?= unix:///run/podman/podman.sock
# PostgreSQL started by `make setup`; the test suite runs every store test against it too.
export ENVFARM_TEST_PG_URL ?= postgresql+psycopg://envfarm:envfarm@127.0.0.1:5432/envfarm_test
PYTEST_ARGS ?=
CONFIG ?= trainer/configs/demo.yaml
REPOS ?= tasks/examples/repos.txt


.PHONY: setup demo demo-core test test-fast bench bench-sandbox bench-mine bench-fleet bench-verify bench-rollout bench-train bench-integrity bench-swebench bench-ecosystem \
        mine train pretrain-tiny manifests doctor gc clean

setup:  ## install system packages, the virtualenv, the Podman socket, PostgreSQL and the base image (idempotent)
	@bash scripts/setup.sh

demo: setup  ## the main job: the tiny pretrained policy learns a verifiable task family by RL (about 10 min)
	$(PYRUN) -m envfarm.cli train --config trainer/configs/demo.yaml train.resume=false

demo-core: setup  ## the foundation alone: base image, one sandbox, one command, the run recorded in the store
	$(PYRUN) -m envfarm.cli demo

test: setup  ## the whole test suite, SQLite and PostgreSQL
	$(PYRUN) -m pytest $(PYTEST_ARGS)

test-fast: setup  ## everything but the tests marked slow
	$(PYRUN) -m pytest -m "not slow" $(PYTEST_ARGS)

doctor:
	$(PYRUN) -m envfarm.cli doctor

gc:
	$(PYRUN) -m envfarm.cli gc

bench: bench-sandbox bench-mine bench-fleet bench-verify bench-rollout bench-train bench-integrity bench-swebench bench-ecosystem

bench-sandbox: setup
	$(PY) -m bench.sandbox

bench-mine: setup
	$(PY) -m bench.mine

.PHONY: bench-mine-scale
bench-mine-scale: setup  ## the miner's store bookkeeping at 100,000 candidates on PostgreSQL, killed at 50% and resumed (about an hour; not part of `bench`) -> bench/results/mine_scale.json
	$(PY) -m bench.mine_scale

bench-fleet: setup
	$(PY) -m bench.fleet

bench-verify: setup
	$(PY) -m bench.verify

bench-rollout: setup
	$(PY) -m bench.rollout

bench-train: setup
	$(PY) -m bench.train

bench-swebench: setup  ## agreement with the SWE-bench harness on real harness logs, grading MB/s, import rows/s
	$(PY) -m bench.swebench

bench-ecosystem: setup  ## the OpenEnv server vs the sandbox directly (1 and 8 sessions), the tool-calling driver per turn
	$(PY) -m bench.ecosystem

.PHONY: bench-envsetup
bench-envsetup: setup  ## env setup on real curated tasks (hours; resumable, not part of `bench`) -> bench/results/envsetup.json
	$(PY) -m bench.envsetup --variant capped
	$(PY) -m bench.envsetup --variant uncapped

.PHONY: bench-envsetup-lang
bench-envsetup-lang: setup  ## env setup beyond Python on real repositories (snapshots under /work/.mirror; resumable) -> bench/results/envsetup_lang.json
	$(PY) -m bench.envsetup_lang

bench-integrity: setup  ## containment probes, the red-team suite, the stream kill and concurrent writers -> bench/results/integrity.json
	$(PY) -m bench.integrity

mine: setup  ## mine tasks from the repositories listed in REPOS (one owner/name per line)
	$(PYRUN) -m envfarm.cli mine --repos $(REPOS)

train: setup  ## launch an RL run from CONFIG
	$(PYRUN) -m envfarm.cli train --config $(CONFIG)

pretrain-tiny: setup  ## pretrain the tiny policy on the Python standard library's sources
	$(PYRUN) -m envfarm.trainer.pretrain

manifests: setup  ## render every kustomize overlay and validate it against the Kubernetes schemas
	$(PYRUN) -m envfarm.cli fleet manifests check

clean:  ## remove envfarm containers and local state (keeps images and the venv)
	-$(PYRUN) -m envfarm.cli gc --all
	rm -rf .envfarm
