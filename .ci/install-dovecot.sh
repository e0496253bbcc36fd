#!/usr/bin/env bash
# Installs Dovecot's IMAP server for the tests that MAILBUS_TEST_DOVECOT=1 turns on
# (connector/dovecottest starts its own instance on free loopback ports). Safe to run twice.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

if ! command -v dovecot >/dev/null 2>&1; then
	apt_get=(apt-get -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
	# A fresh machine may have no package lists yet, or old ones that name versions the
	# mirror no longer has.
	apt-get update
	"${apt_get[@]}" install -y --no-install-recommends dovecot-imapd
fi

# The package may start the system instance (there is no systemd in containers, but the
# init script can still run it); it would hold 143/993 and nothing needs it.
if command -v service >/dev/null 2>&1; then
	service dovecot stop >/dev/null 2>&1 || true
fi
if command -v systemctl >/dev/null 2>&1; then
	systemctl disable --now dovecot.service dovecot.socket >/dev/null 2>&1 || true
fi

dovecot --version
