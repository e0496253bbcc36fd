#!/usr/bin/env bash
# Installs headless Chromium for the admin console's browser tests (connector/console,
# driven with chromedp). Those tests skip without it, except under CI=true, where a
# missing browser fails them. Safe to run twice.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

if ! command -v chromium >/dev/null 2>&1; then
	apt_get=(apt-get -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
	# A fresh machine may have no package lists yet, or old ones that name versions the
	# mirror no longer has.
	apt-get update
	"${apt_get[@]}" install -y --no-install-recommends chromium fonts-dejavu-core
fi

chromium --version
