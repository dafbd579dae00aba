# The verbs of the Sparkwing repository. `make help` lists them.
SHELL := /bin/bash
CARGO ?= cargo
CARGO_TARGET_DIR_BIN := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)/debug
RELEASE_BIN := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)/release/sparkwing

.PHONY: help build demo test test-rust test-e2e test-images test-browser e2e e2e-testbed lint fmt bench setup-test crds crds-check runner-image images images-save chart-crds chart-check

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/'

build: ## Build the sparkwing binary (release)
	$(CARGO) build --release -p sparkwing-cli

demo: build ## Run the example pipeline with a fresh store under target/demo-home
	SPARKWING_HOME=$(CURDIR)/target/demo-home $(RELEASE_BIN) run -C examples/hello hello --name demo
	SPARKWING_HOME=$(CURDIR)/target/demo-home $(RELEASE_BIN) runs list

test: setup-test test-rust test-e2e test-images test-browser ## Every test: Rust, the Kubernetes test bed, the images, then the browser tests

test-rust: ## Rust tests of every crate but sparkwing-e2e (unit, integration, end-to-end with real runs)
	$(CARGO) test --workspace --exclude sparkwing-e2e

e2e-testbed: ## Build the Kubernetes binaries (apiserver, controller-manager, scheduler, kubelet, kubectl), etcd and helm from their Go modules, once (cache: /var/tmp/sparkwing-e2e)
	bash e2e/testbed/build.sh

test-e2e: e2e-testbed ## The Kubernetes end-to-end tests against the real test bed (crate sparkwing-e2e; SPARKWING_E2E_NODE chooses the node)
	# The real runner's pods mount this binary (e2e/src/real_runner.rs).
	$(CARGO) build -p sparkwing-cli --bin sparkwing
	# The fail-over test runs two operator processes (e2e/tests/operator_failover.rs).
	$(CARGO) build -p sparkwing-operator --bin sparkwing-operator
	$(CARGO) test -p sparkwing-e2e

e2e: test-e2e ## Build the test bed if needed and run the Kubernetes end-to-end tests

test-browser: ## The dashboard in a real Chromium (playwright-core)
	@if [ -f e2e/dashboard/run.sh ]; then bash e2e/dashboard/run.sh; else echo "no browser tests yet"; fi

images: ## Build the operator and runner images (and their local Debian bases) from host release binaries (docs/operator.md#images)
	bash images/build.sh --profile release

images-save: ## `make images`, then `docker save` both into target/images-save/{operator,runner}.tar (under CARGO_TARGET_DIR when set)
	bash images/build.sh --profile release --save $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)/images-save

test-images: ## Build the images from host debug binaries (cached by content) and run each as the chart does
	bash images/test.sh

runner-image: ## Build the Docker executor's runner image from the debug sparkwing (no registry needed)
	$(CARGO) build -p sparkwing-cli
	$(CARGO_TARGET_DIR_BIN)/sparkwing runner-image build

setup-test: ## Install what the tests need (idempotent; apt packages as root)
	bash scripts/setup-test-deps.sh

lint: ## Formatting and clippy, as CI runs them
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt: ## Format the code
	$(CARGO) fmt --all

crds: ## Regenerate the CRD YAML in crds/yaml from the Rust types in crds/src
	$(CARGO) run -p sparkwing-crds --bin crdgen -- --out crds/yaml

crds-check: ## Fail when crds/yaml is stale (what CI runs)
	$(CARGO) run -p sparkwing-crds --bin crdgen -- --out crds/yaml --check

bench: build ## Benchmarks (print figures; not tests)
	bash bench/run.sh

chart-crds: ## Copy the generated CRD YAML into the operator chart (charts/sparkwing/crds)
	mkdir -p charts/sparkwing/crds
	rm -f charts/sparkwing/crds/*.yaml
	cp crds/yaml/*.yaml charts/sparkwing/crds/

chart-check: ## Fail when the chart's CRD copies drift from crds/yaml; helm lint + template when helm is on PATH
	bash charts/check.sh
