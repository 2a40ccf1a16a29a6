# specd — the commands the README documents.
SHELL := /bin/bash
GO ?= go
CACHE ?= $(CURDIR)/.cache
SHARED ?= $(CURDIR)/../shared
MODEL ?= $(SHARED)/models/stories260K.gguf
HEAVYGEN := $(CACHE)/bin/heavygen
TEST_HEAVY := $(CACHE)/models/heavy-test-f32.gguf
TEST_COSTLY := $(CACHE)/models/heavy-test-costly-q8.gguf
TEST_COSTLY_LO := $(CACHE)/models/heavy-test-costly-lo-q8.gguf
QUICK_DRAFT := $(CACHE)/models/stories260K-q8.gguf
BENCH_HEAVY := $(CACHE)/models/heavy-q8.gguf
export SPECD_LIB_DIR ?= $(CACHE)/backend/linux-x64-3.22.1
export GGML_NO_BACKTRACE := 1

.PHONY: all backend build test run models bench-models vet fmt clean

all: build

## backend: fetch the prebuilt llama.cpp libraries (npm, sha256-pinned) into .cache/backend
backend:
	@./scripts/install-backend.sh

## build: bin/specd, CGO_ENABLED=0
build:
	CGO_ENABLED=0 $(GO) build -o bin/specd ./cmd/specd

$(HEAVYGEN):
	@mkdir -p $(CACHE)/bin
	CGO_ENABLED=0 $(GO) build -C $(SHARED)/tools/heavygen -o $(HEAVYGEN) .

# A small heavygen target for tests: same tokenizer, imperfect agreement with
# stories260K, cheap enough to run dozens of prompts.
$(TEST_HEAVY): | $(HEAVYGEN)
	@mkdir -p $(CACHE)/models
	$(HEAVYGEN) --in $(MODEL) --out $@.tmp --extra-layers 3 --ffn 1024 --eps 0.045 --seed 1 --type f32 >/dev/null && mv $@.tmp $@

# About 15x the draft's cost per token, high and low agreement (adaptive k).
$(TEST_COSTLY): | $(HEAVYGEN)
	@mkdir -p $(CACHE)/models
	$(HEAVYGEN) --in $(MODEL) --out $@.tmp --extra-layers 19 --ffn 4096 --eps 0.045 --seed 1 --type q8_0 >/dev/null && mv $@.tmp $@
$(TEST_COSTLY_LO): | $(HEAVYGEN)
	@mkdir -p $(CACHE)/models
	$(HEAVYGEN) --in $(MODEL) --out $@.tmp --extra-layers 19 --ffn 4096 --eps 0.3 --seed 1 --type q8_0 >/dev/null && mv $@.tmp $@

# The benchmark pair's target (see docs/BENCHMARKS.md).
$(BENCH_HEAVY): | $(HEAVYGEN)
	@mkdir -p $(CACHE)/models
	$(HEAVYGEN) --in $(MODEL) --out $@.tmp --extra-layers 19 --ffn 16384 --eps 0.045 --seed 1 --type q8_0 >/dev/null && mv $@.tmp $@

## models: the generated test models under .cache/models
models: $(TEST_HEAVY) $(TEST_COSTLY) $(TEST_COSTLY_LO) $(QUICK_DRAFT)

bench-models: $(BENCH_HEAVY)

TEST_ENV := SPECD_REQUIRE_MODELS=1 SPECD_TEST_HEAVY=$(TEST_HEAVY) \
	SPECD_TEST_COSTLY=$(TEST_COSTLY) SPECD_TEST_COSTLY_LO=$(TEST_COSTLY_LO)

## test: the whole suite on the real backend and the real model, then the
## server's behavioural tests again against the real scheduler on
## stories260K, then a 10-second `specd bench` smoke against `specd serve`
test: backend models build
	$(TEST_ENV) $(GO) vet ./...
	$(TEST_ENV) $(GO) test -race -timeout 40m ./...
	$(TEST_ENV) SPECD_SERVER_BACKEND=real $(GO) test -race -count=1 -timeout 20m ./server/
	THREADS=1 DURATION=10s bench/smoke.sh bin/specd $(MODEL)

## run: build and start the daemon on the default models
# The quick start's draft model (QUICK_DRAFT, above): a Q8_0 copy of
# stories260K (same vocabulary), made with specd quantize.
$(QUICK_DRAFT): | backend build
	@mkdir -p $(CACHE)/models
	./bin/specd quantize $(MODEL) $@ --type Q8_0

run: backend build $(QUICK_DRAFT)
	./bin/specd serve --config configs/specd.yaml

vet:
	$(GO) vet ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin
