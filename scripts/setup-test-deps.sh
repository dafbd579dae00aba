#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine; quick when all is present.
set -euo pipefail

need_apt=()
command -v git >/dev/null || need_apt+=(git)
command -v python3 >/dev/null || need_apt+=(python3)
command -v pgrep >/dev/null || need_apt+=(procps)
if [ -d "$(dirname "$0")/../e2e/dashboard" ]; then
  [ -x /usr/bin/chromium ] || need_apt+=(chromium fonts-dejavu-core)
  command -v node >/dev/null || need_apt+=(nodejs npm)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages: ${need_apt[*]}; install them (apt-get install ${need_apt[*]}) and retry" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi
