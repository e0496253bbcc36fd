#!/usr/bin/env bash
# IDLE latency (issue 9): mailbus (the real binary, embedded NATS with file storage) waits
# in IMAP IDLE; bench/driver APPENDs messages one at a time and measures from each
# APPEND's completion to its event on mail.bus.0.bench (matched by Message-ID), then
# prints median, p90, p99 and max as a Markdown table.
#
#   mem      go-imap's in-memory server, inside the driver: mailbus's own delay
#   dovecot  a real Dovecot on loopback: adds Dovecot's notification delay, a fixed 500 ms
#            after the change is seen (NOTIFY_DELAY_MSECS in
#            src/lib-storage/mailbox-watch.c, a compile-time constant, not a setting)
#   dovecot-floor  no mailbus: a bare go-imap client in IDLE, APPEND to EXISTS; the part of
#            the dovecot figure that is Dovecot's
#
# usage: bench/idle.sh            COUNT=500 GAP=50ms SERVERS="mem dovecot dovecot-floor"
# env:   COUNT    messages appended per server
#        GAP      pause after each event before the next APPEND
#        SERVERS  subset of "mem dovecot dovecot-floor"
#        KEEP=1   keep the work directory in /tmp
set -euo pipefail
shopt -s inherit_errexit # a failing driver inside $(...) must stop the script
cd "$(dirname "$0")/.."

COUNT=${COUNT:-500}
GAP=${GAP:-50ms}
SERVERS=${SERVERS:-mem dovecot dovecot-floor}

source bench/lib.sh

install_tools
build_programs

rows=()
for server in $SERVERS; do
	case $server in
	mem)
		target=(-mem)
		;;
	dovecot | dovecot-floor)
		[[ -n $DOVECOT_PID ]] || start_dovecot idle
		target=(-imap "127.0.0.1:$IMAPS_PORT" -encryption ssl -ca "$CA" -user idle -pass secret)
		;;
	*)
		echo "unknown server $server (want mem, dovecot or dovecot-floor)" >&2
		exit 2
		;;
	esac
	echo "IDLE latency against $server, $COUNT appends..." >&2
	if [[ $server == *-floor ]]; then
		out=$("$BIN/driver" idle -floor -count "$COUNT" -gap "$GAP" "${target[@]}")
		rss=–
	else
		start_mailbus "idle-$server"
		out=$("$BIN/driver" idle -nats "$NATS_URL" -count "$COUNT" -gap "$GAP" "${target[@]}")
		stop_mailbus
		rss=$(peak_rss_mb "$BENCH_DIR/time.idle-$server")
	fi
	echo "$out" | grep -v '^|' >&2
	rows+=("$(echo "$out" | grep '^|') $rss |")
done

echo
echo "APPEND done to event received, ms ($(nproc) cores, mailbus with embedded NATS)"
echo
echo "| IMAP server | appends | median | p90 | p99 | max | mailbus peak RSS MiB |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${rows[@]}"
