#!/usr/bin/env bash
# Side-by-side ingest benchmark (issue 9): the same Dovecot mailbox read by
#   barefetch  one `UID FETCH 1:* BODY.PEEK[]`, bytes discarded (the floor; bench/barefetch)
#   rawpipe    the same FETCH, every raw message published unparsed and asynchronously to a
#              JetStream file stream on bench/natsserver, then every ack awaited (the floor
#              of the job; bench/rawpipe)
#   mbsync     isync pulling the mailbox into a fresh Maildir
#   mailbus    the real binary with its embedded NATS (file storage), driven by control
#              commands (bench/driver): from route.put until the route reports its first
#              cycle done, every event stored in the stream and every message \Seen (both
#              checked after the time is taken, as the raw pipe's stream is)
# in alternating rounds, then prints a Markdown table of medians with ratios to both floors.
# Wall time and peak RSS ("Maximum resident set size") come from GNU time -v on the
# measured process; for mailbus the time is the driver's (route.put to done), since the
# process lives before and after the work.
#
# usage: bench/run.sh            MIXED=5000 SMALL=20000 ROUNDS=3 (the full run)
#        MIXED=200 SMALL=200 ROUNDS=1 bench/run.sh   (a smoke run)
# env:   MIXED, SMALL   messages in each corpus (0 leaves the corpus out)
#        ROUNDS         rounds of every tool on every corpus (medians are reported)
#        TOOLS          subset of "barefetch rawpipe mbsync mailbus mailbus_extnats"; the
#                       last is mailbus with NATS in its own process (bench/natsserver, as
#                       rawpipe's), for mailbus's RSS alone and a like-for-like ratio
#        BASE=REV       also mailbus built at git revision REV (tools mailbus_base and
#                       mailbus_base_extnats, added to TOOLS), to measure a change against
#                       its starting point in the same rounds
#        PPROF=DIR      CPU profiles of every run of mailbus (built with -tags benchprof)
#                       and of bench/natsserver: DIR/{mailbus,nats}-CORPUS-TOOL-ROUND.pprof
#        TRACE=1        with PPROF, also an execution trace of mailbus (go tool trace):
#                       DIR/mailbus-CORPUS-TOOL-ROUND.trace
#        GEN            gen_maildir.py (default ../shared/bench/gen_maildir.py)
#        ENCRYPTION     none (default: plain IMAP on loopback, as the issue's yardstick
#                       figures were taken) or ssl (IMAPS for every tool; Dovecot's
#                       imap-login then spends most of its CPU on TLS, for every tool alike)
#        KEEP=1         keep the work directory (logs, stores) in /tmp
# Runs as root (Dovecot's master must); installs Dovecot, isync and GNU time with apt.
set -euo pipefail
shopt -s inherit_errexit # the runs report through $(...): a failure there must stop the script
cd "$(dirname "$0")/.."

MIXED=${MIXED:-5000}
SMALL=${SMALL:-20000}
ROUNDS=${ROUNDS:-3}
TOOLS=${TOOLS:-barefetch rawpipe mbsync mailbus mailbus_extnats}
GEN=${GEN:-../shared/bench/gen_maildir.py}
ENCRYPTION=${ENCRYPTION:-none}
[[ -n ${BASE:-} ]] && TOOLS="$TOOLS mailbus_base"

source bench/lib.sh

install_tools
build_programs
start_dovecot mixed small

# Every tool reads over the same port and protocol.
case $ENCRYPTION in
none) PORT=$IMAP_PORT SSLTYPE=None ;;
ssl) PORT=$IMAPS_PORT SSLTYPE=IMAPS ;;
*) echo "ENCRYPTION=$ENCRYPTION: want none or ssl" >&2; exit 2 ;;
esac

corpora=()
((MIXED > 0)) && corpora+=(mixed)
((SMALL > 0)) && corpora+=(small)
for c in "${corpora[@]}"; do
	n=$MIXED
	[[ $c == small ]] && n=$SMALL
	echo "generating $n $c messages..." >&2
	python3 "$GEN" "$(maildir "$c")" "$n" --profile "$c"
	chown -R nobody "$(maildir "$c")"
	echo "$c $n $(du -sb "$(maildir "$c")/new" | cut -f1)" >>"$BENCH_DIR/corpora"
done

# reset makes every message of a corpus unseen again, so every run does the same work.
reset() {
	doveadm -c "$DOVECOT_CONF" flags remove '\Seen' -u "$1" mailbox INBOX all
}

# Every run_TOOL prints: wall seconds, peak RSS MiB, CPU seconds of the tool's process,
# CPU seconds of its separate NATS server ("-" when it has none).
run_barefetch() {
	/usr/bin/time -v -o "$BENCH_DIR/time.bare" "$BIN/barefetch" -addr "127.0.0.1:$PORT" \
		-encryption "$ENCRYPTION" -ca "$CA" -user "$1" -pass secret >&2
	echo "$(wall_s "$BENCH_DIR/time.bare") $(peak_rss_mb "$BENCH_DIR/time.bare") $(cpu_s "$BENCH_DIR/time.bare") -"
}

run_rawpipe() {
	local port
	port=$(free_port)
	start_natsserver "$port"
	if ! /usr/bin/time -v -o "$BENCH_DIR/time.rawpipe" "$BIN/rawpipe" -addr "127.0.0.1:$PORT" \
		-encryption "$ENCRYPTION" -ca "$CA" -user "$1" -pass secret -nats "nats://127.0.0.1:$port" >&2; then
		stop_natsserver
		return 1
	fi
	stop_natsserver
	echo "$(wall_s "$BENCH_DIR/time.rawpipe") $(peak_rss_mb "$BENCH_DIR/time.rawpipe") $(cpu_s "$BENCH_DIR/time.rawpipe") $(cpu_s "$BENCH_DIR/time.nats")"
}

run_mbsync() {
	local near=$BENCH_DIR/near rc=$BENCH_DIR/mbsyncrc got
	rm -rf "$near"
	mkdir -p "$near"
	# One channel pulling INBOX into a Maildir; isync 1.4 syntax (Far/Near, SSLType).
	cat >"$rc" <<-EOF
		IMAPAccount bench
		# The certificate names localhost; isync checks DNS names only.
		Host localhost
		Port $PORT
		User $1
		Pass secret
		SSLType $SSLTYPE
		# isync sends a password over a plain connection only when told so explicitly.
		AuthMechs LOGIN
		CertificateFile $CA

		IMAPStore far
		Account bench

		MaildirStore near
		Path $near/
		Inbox $near/INBOX

		Channel bench
		Far :far:
		Near :near:
		Patterns INBOX
		Sync Pull
		Create Near
		# State inside the near Maildir, which every run starts afresh (the default,
		# ~/.mbsync/, would make the next run a no-op).
		SyncState *
	EOF
	/usr/bin/time -v -o "$BENCH_DIR/time.mbsync" mbsync -c "$rc" -q bench >&2
	got=$(find "$near/INBOX" -path '*/cur/*' -o -path '*/new/*' | wc -l)
	if ((got != $2)); then
		echo "mbsync pulled $got messages, want $2" >&2
		return 1
	fi
	echo "$(wall_s "$BENCH_DIR/time.mbsync") $(peak_rss_mb "$BENCH_DIR/time.mbsync") $(cpu_s "$BENCH_DIR/time.mbsync") -"
}

run_mailbus() {
	local out
	local tag=${MAILBUS_TAG:-mailbus}
	start_mailbus "$tag" "${NATS_MODE:-embedded}"
	if ! out=$("$BIN/driver" ingest -nats "$NATS_URL" -imap "127.0.0.1:$PORT" -encryption "$ENCRYPTION" \
		-ca "$CA" -user "$1" -pass secret); then
		stop_mailbus # this runs in a subshell, which the EXIT trap does not clean up
		return 1
	fi
	echo "$out" | grep -v elapsed_s= >&2
	local nats=-
	stop_mailbus
	[[ ${NATS_MODE:-embedded} == external ]] && nats=$(cpu_s "$BENCH_DIR/time.nats")
	echo "$(echo "$out" | sed -n 's/^elapsed_s=//p') $(peak_rss_mb "$BENCH_DIR/time.$tag") $(cpu_s "$BENCH_DIR/time.$tag") $nats"
}

# run_mailbus_extnats is run_mailbus with NATS in a process of its own: mailbus's RSS alone.
run_mailbus_extnats() {
	NATS_MODE=external run_mailbus "$@"
}

# run_mailbus_base and run_mailbus_base_extnats are the same with mailbus built at BASE.
run_mailbus_base() {
	MAILBUS_TAG=mailbus-base run_mailbus "$@"
}

run_mailbus_base_extnats() {
	MAILBUS_TAG=mailbus-base NATS_MODE=external run_mailbus "$@"
}

# Warm-up, not measured: Dovecot moves new/ to cur/ and builds its index and cache on the
# first reads, and the page cache fills; whichever tool came first would pay for that.
for c in "${corpora[@]}"; do
	reset "$c"
	"$BIN/barefetch" -addr "127.0.0.1:$PORT" -encryption "$ENCRYPTION" -ca "$CA" -user "$c" -pass secret >&2
done

for round in $(seq "$ROUNDS"); do
	for c in "${corpora[@]}"; do
		n=$(awk -v c="$c" '$1 == c { print $2 }' "$BENCH_DIR/corpora")
		for tool in $TOOLS; do
			reset "$c"
			# The previous run's store (mbsync's Maildir, the stream store) is removed and
			# the dirty pages written out now, so that no run pays for the last one's
			# writeback.
			rm -rf "$BENCH_DIR/store" "$BENCH_DIR/near"
			sync
			echo "round $round: $tool, $c..." >&2
			PROFILE_TAG=$c-$tool-$round
			r=$("run_$tool" "$c" "$n")
			echo "$c $tool $round $r" >>"$BENCH_DIR/results"
		done
	done
done

ENCRYPTION=$ENCRYPTION python3 - "$BENCH_DIR/corpora" "$BENCH_DIR/results" <<'EOF'
import os, statistics, sys
corpora = {c: (int(n), int(b)) for c, n, b in (l.split() for l in open(sys.argv[1]))}
runs = {}
for line in open(sys.argv[2]):
    corpus, tool, _, wall, rss, cpu, nats = line.split()
    runs.setdefault((corpus, tool), []).append((float(wall), float(rss), float(cpu), None if nats == "-" else float(nats)))
cores = len(open('/proc/cpuinfo').read().split('processor')) - 1
load = open('/proc/loadavg').read().split()[:3]
print(f"\n{cores} cores, IMAP encryption {os.environ['ENCRYPTION']}, load average at the end {' '.join(load)}; medians of the rounds; "
      "mailbus's wall time is route.put to the route's first cycle done (every event stored, every message \\Seen; checked after); CPU s is user+system of the tool's process "
      "(mailbus: with its embedded NATS) + of its own NATS server (bench/natsserver)\n")
print("| corpus | tool | runs | wall s, median (min–max) | × barefetch | × rawpipe | CPU s, tool + NATS | peak RSS MiB, median (max) |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
med = lambda xs: statistics.median(xs) if xs else 0
for corpus, (n, size) in corpora.items():
    floors = [med([r[0] for r in runs.get((corpus, f), [])]) for f in ("barefetch", "rawpipe")]
    for (c, tool), rs in runs.items():
        if c != corpus:
            continue
        walls, rss = [r[0] for r in rs], [r[1] for r in rs]
        m = med(walls)
        ratios = " | ".join(f"{m / f:.2f}" if f else "–" for f in floors)
        cpu = f"{med([r[2] for r in rs]):.2f}"
        if rs[0][3] is not None:
            cpu += f" + {med([r[3] for r in rs]):.2f}"
        print(f"| {n} {corpus} ({size / 2**20:.1f} MiB on disk) | {tool} | {len(rs)} | "
              f"{m:.2f} ({min(walls):.2f}–{max(walls):.2f}) | {ratios} | {cpu} | "
              f"{statistics.median(rss):.0f} ({max(rss):.0f}) |")
EOF
