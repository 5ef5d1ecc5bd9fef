# myhoard: backup and restore daemon for MySQL 8 / MariaDB clusters.
#   make run    build, install what is missing, run a MariaDB sandbox with a
#               write load and a myhoard daemon backing it up under ./var/run
#               (Ctrl-C stops); make run-restore then restores the latest
#               backup into a second sandbox under ./var/restore
#   make test   install what is missing and run every test
#   make lint   gofmt, go vet, staticcheck
#   make bench  benchmarks with same-run baselines

GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)
TOOLS     := $(CURDIR)/.tools/bin
STATICCHECK_VERSION := v0.8.2
TEST_TIMEOUT ?= 18m

.PHONY: all build deps run run-restore test lint bench fuzz clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/myhoard ./cmd/myhoard

bin/sandbox: $(shell find e2e -name '*.go')
	$(GO) build -o bin/sandbox ./e2e/cmd/sandbox

deps:
	./scripts/install-deps.sh

run: build bin/sandbox
	./scripts/install-deps.sh mariadb
	./bin/sandbox -dir var/run -myhoard bin/myhoard

run-restore: build bin/sandbox
	./scripts/install-deps.sh mariadb
	./bin/sandbox -restore -dir var/restore -backups var/run/backups -myhoard bin/myhoard -http-port 16002

test: deps
	$(GO) vet ./...
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...
	# the pure-Go zstd encoder of builds without cgo
	CGO_ENABLED=0 $(GO) test -count=1 -run 'Codec|Pzstd|Zstd|EarlierReleases' ./storage

$(TOOLS)/staticcheck:
	GOBIN=$(TOOLS) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

lint: $(TOOLS)/staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt wants to change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(TOOLS)/staticcheck ./...

bench: deps
	$(GO) test -run '^$$' -bench . -benchtime 3x -timeout 90m ./...

# Short fuzzing of every parser and decoder (not part of make test: the seed
# corpora already run there).
fuzz:
	$(GO) test ./mysql -run '^$$' -fuzz FuzzParseMySQLGTIDSet -fuzztime 30s
	$(GO) test ./mysql -run '^$$' -fuzz FuzzParseMariaDBGTIDSet -fuzztime 30s
	$(GO) test ./mysql -run '^$$' -fuzz FuzzScanBinlog -fuzztime 60s
	$(GO) test ./config -run '^$$' -fuzz FuzzParse -fuzztime 30s
	$(GO) test ./storage -run '^$$' -fuzz FuzzObjectCacheFile -fuzztime 30s

clean:
	rm -rf bin var .tools
