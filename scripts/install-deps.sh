#!/usr/bin/env bash
# Installs what myhoard's build and tests need and is missing: the MariaDB
# server, backup tool and client, Prometheus (Debian packages), the Go modules, and the
# storage emulators (versitygw, fake-gcs-server, Azurite) into .tools.
# `install-deps.sh mariadb` stops after the Go modules (what `make run`
# needs). Each step is skipped when already done, so a second run is fast.
set -euo pipefail

have() {
  command -v "$1" > /dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]
}

missing=()
have mariadbd || missing+=(mariadb-server)
have mariadb-install-db || missing+=(mariadb-server)
have mariabackup || missing+=(mariadb-backup)
have mbstream || missing+=(mariadb-backup)
have mariadb || missing+=(mariadb-client)
have mariadb-binlog || missing+=(mariadb-client)
have zstd || missing+=(zstd)
have sysbench || missing+=(sysbench) # make bench
have promtool || missing+=(prometheus) # the alert rules' tests, a real scraper

sudo=""
if [ "$(id -u)" != 0 ]; then
  sudo=sudo
fi

if [ "${#missing[@]}" -gt 0 ]; then
  pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
  echo "install-deps: installing $pkgs"
  if [ -n "$sudo" ] && ! command -v sudo > /dev/null; then
    echo "install-deps: need root or sudo to install: $pkgs" >&2
    exit 1
  fi
  $sudo apt-get update -q
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q $pkgs
  for t in mariadbd mariabackup mariadb; do
    have "$t" || { echo "install-deps: $t is still missing after installing $pkgs" >&2; exit 1; }
  done
fi

go mod download
if [ "${1:-}" = mariadb ]; then
  exit 0
fi

# Storage emulators for the storage tests, into .tools (git ignores it).
root=$(cd "$(dirname "$0")/.." && pwd)
tools="$root/.tools"
mkdir -p "$tools/bin"
if [ ! -x "$tools/bin/versitygw" ]; then
  echo "install-deps: installing versitygw (S3 emulator)"
  GOBIN="$tools/bin" go install github.com/versity/versitygw/cmd/versitygw@v1.8.0
fi
if [ ! -x "$tools/bin/fake-gcs-server" ]; then
  echo "install-deps: installing fake-gcs-server (GCS emulator)"
  GOBIN="$tools/bin" go install github.com/fsouza/fake-gcs-server@v1.56.1
fi
if [ ! -x "$tools/azurite/node_modules/.bin/azurite-blob" ]; then
  if ! command -v npm > /dev/null 2>&1; then
    echo "install-deps: installing nodejs and npm (for Azurite)"
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q nodejs npm
  fi
  echo "install-deps: installing Azurite (Azure Blob emulator)"
  mkdir -p "$tools/azurite"
  (cd "$tools/azurite" && { [ -f package.json ] || npm init -y > /dev/null; } && npm install azurite@3.35.0 --no-audit --no-fund --loglevel=error)
fi
