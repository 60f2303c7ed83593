# extauthz — run `make help` for the targets.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
GO      ?= go
BIN     := bin/extauthz
# deploy/verify: the tests of the Helm chart, the alerts and the dashboard,
# a module of its own (Helm's and Prometheus's libraries stay out of go.mod).
VERIFY  := deploy/verify

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z_-]+:.*##/ {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: deps
deps: ## Install redis-server and gcc when missing (Debian/Ubuntu, apt-get)
	@scripts/deps.sh

.PHONY: build
build: ## Build bin/extauthz
	$(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o $(BIN) ./cmd/extauthz

.PHONY: test
test: deps ## Run every test with -race: unit, real Redis, end to end with real Hydra; the Helm chart, alerts and dashboard
	$(GO) test -race -count=1 -timeout 20m ./...
	cd $(VERIFY) && $(GO) test -count=1 -timeout 10m ./...

.PHONY: run
run: build ## Run extauthz locally on embedded defaults (in-memory sessions; set EXTAUTHZ_* to configure)
	EXTAUTHZ_LOG_FORMAT=$${EXTAUTHZ_LOG_FORMAT:-text} ./$(BIN)

.PHONY: demo
demo: deps ## End to end on this machine: Redis, Ory Hydra, extauthz; log in, restart, keep working
	$(GO) run ./cmd/extauthz-demo

.PHONY: bench
bench: deps ## Side by side on one Redis: a no-op server, extauthz with/without its cache, oauth2-proxy, the GET floor; logout propagation (table + bench-results/bench.json); then the microbenchmarks
	$(GO) run ./cmd/extauthz-bench $(BENCH_FLAGS)
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 1s ./pkg/session/ ./pkg/authz/ ./pkg/tracing/

STATICCHECK_VERSION := v0.8.2

.PHONY: lint
lint: ## gofmt, go vet and staticcheck (pinned, built from the module proxy)
	@test -z "$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$'))" || { gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$'); exit 1; }
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...
	cd $(VERIFY) && $(GO) vet ./... && $(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

.PHONY: generate
generate: ## Regenerate proto/sessionpb from proto/session.proto (needs protoc)
	$(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
	PATH="$$($(GO) env GOPATH)/bin:$$PATH" protoc --go_out=. --go_opt=module=github.com/extauthz/extauthz proto/session.proto
