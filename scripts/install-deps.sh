#!/usr/bin/env bash
# Installs what myhoard's build and tests need and is missing: the MariaDB
# server, backup tool and client (Debian packages) and the Go modules.
# Each step is skipped when already done, so a second run is fast.
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

if [ "${#missing[@]}" -gt 0 ]; then
  pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
  echo "install-deps: installing $pkgs"
  sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo > /dev/null || { echo "install-deps: need root or sudo to install: $pkgs" >&2; exit 1; }
    sudo=sudo
  fi
  $sudo apt-get update -q
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q $pkgs
  for t in mariadbd mariabackup mariadb; do
    have "$t" || { echo "install-deps: $t is still missing after installing $pkgs" >&2; exit 1; }
  done
fi

go mod download
