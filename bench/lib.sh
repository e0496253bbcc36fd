# Shared by bench/run.sh and bench/idle.sh (sourced, not run): installs what the benchmarks
# need, starts a throw-away Dovecot on free loopback ports, builds the programs, and cleans
# everything up on exit.

# BENCH_DIR holds everything a run makes (config, certificate, mail, stores, logs). It must
# be reachable by Dovecot's unprivileged processes, so it is not under a 0700 directory,
# and short, for Dovecot's socket paths.
BENCH_DIR=$(mktemp -d /tmp/mailbus-bench.XXXXXX)
chmod 755 "$BENCH_DIR"
BIN=$BENCH_DIR/bin
DOVECOT_PID=
MAILBUS_TIME_PID=
NATSSERVER_PID=
# PROFILE_TAG, when PPROF is set, names the run's profiles: $PPROF/{mailbus,nats}-TAG.pprof.
PROFILE_TAG=

cleanup() {
	stop_mailbus
	if [[ -n $DOVECOT_PID ]]; then
		kill "$DOVECOT_PID" 2>/dev/null || true
		wait "$DOVECOT_PID" 2>/dev/null || true
	fi
	if [[ ${KEEP:-0} == 1 ]]; then
		echo "kept $BENCH_DIR" >&2
	else
		rm -rf "$BENCH_DIR"
	fi
}
trap cleanup EXIT

# install_tools installs Dovecot (the CI script), isync (mbsync) and GNU time when missing.
install_tools() {
	bash .ci/install-dovecot.sh >/dev/null
	local missing=()
	command -v mbsync >/dev/null || missing+=(isync)
	[[ -x /usr/bin/time ]] || missing+=(time)
	command -v openssl >/dev/null || missing+=(openssl)
	if ((${#missing[@]})); then
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	fi
}

# build_programs builds the measured binary and the bench programs, outside the timings.
# With PPROF=DIR, mailbus is built with the tag benchprof (cmd/mailbus/profile.go) so that
# it writes a CPU profile of its whole run when MAILBUS_BENCH_CPUPROFILE names a file.
build_programs() {
	go build -o "$BIN/" ./bench/barefetch ./bench/driver ./bench/natsserver ./bench/rawpipe
	if [[ -n ${PPROF:-} ]]; then
		mkdir -p "$PPROF"
		go build -tags benchprof -o "$BIN/" ./cmd/mailbus
	else
		go build -o "$BIN/" ./cmd/mailbus
	fi
	# BASE=REV: mailbus as it was at REV too (tools mailbus_base, mailbus_base_extnats), so a
	# change is measured against its starting point in the same rounds.
	if [[ -n ${BASE:-} ]]; then
		local src=$BENCH_DIR/base-src
		git worktree add --detach "$src" "$BASE" >&2
		(cd "$src" && go build -o "$BIN/mailbus-base" ./cmd/mailbus)
		git worktree remove --force "$src"
	fi
}

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_dovecot USER... starts Dovecot with one mailbox per user (password "secret"),
# owned by "nobody", as connector/dovecottest does. Sets IMAP_PORT, IMAPS_PORT, CA and
# DOVECOT_CONF, and maildir USER prints a user's Maildir.
start_dovecot() {
	local d=$BENCH_DIR/dovecot uid gid user
	mkdir -p "$d/run" "$d/state"
	uid=$(id -u nobody)
	gid=$(id -g nobody)
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
		-subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
		-keyout "$d/key.pem" -out "$d/cert.pem" 2>/dev/null
	CA=$d/cert.pem
	: >"$d/passwd"
	for user in "$@"; do
		echo "$user:{PLAIN}secret:$uid:$gid::$d/mail/$user::" >>"$d/passwd"
		mkdir -p "$d/mail/$user/Maildir/"{cur,new,tmp}
		chown -R nobody:"$gid" "$d/mail/$user"
	done
	chmod 755 "$d/mail"
	IMAP_PORT=$(free_port)
	IMAPS_PORT=$(free_port)
	DOVECOT_CONF=$d/dovecot.conf
	# The configuration of connector/dovecottest; what differs for benchmarks is noted.
	cat >"$DOVECOT_CONF" <<-EOF
		protocols = imap
		listen = 127.0.0.1
		base_dir = $d/run
		state_dir = $d/state
		instance_name = mailbus-bench
		log_path = $d/dovecot.log
		default_login_user = dovenull
		default_internal_user = dovecot
		ssl = yes
		ssl_cert = <$d/cert.pem
		ssl_key = <$d/key.pem
		ssl_min_protocol = TLSv1.2
		disable_plaintext_auth = no
		auth_mechanisms = plain login
		passdb {
		  driver = passwd-file
		  args = scheme=PLAIN $d/passwd
		}
		userdb {
		  driver = passwd-file
		  args = $d/passwd
		}
		mail_location = maildir:~/Maildir
		mail_fsync = never
		# IDLE: a change seen through inotify is announced after a fixed 500 ms
		# (NOTIFY_DELAY_MSECS in src/lib-storage/mailbox-watch.c, not a setting). This
		# setting only paces the fallback check by stat() when inotify says nothing.
		mailbox_idle_check_interval = 1 secs
		service anvil {
		  unix_listener anvil-auth-penalty {
		    mode = 0
		  }
		}
		service imap-login {
		  inet_listener imap {
		    address = 127.0.0.1
		    port = $IMAP_PORT
		  }
		  inet_listener imaps {
		    address = 127.0.0.1
		    port = $IMAPS_PORT
		    ssl = yes
		  }
		}
	EOF
	dovecot -F -c "$DOVECOT_CONF" 2>>"$d/dovecot.stderr" &
	DOVECOT_PID=$!
	for _ in $(seq 100); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$IMAPS_PORT") 2>/dev/null; then
			return 0
		fi
		sleep 0.1
	done
	echo "dovecot did not start:" >&2
	tail "$d/dovecot.stderr" "$d/dovecot.log" >&2 || true
	return 1
}

maildir() { echo "$BENCH_DIR/dovecot/mail/$1/Maildir"; }

# start_mailbus TAG [external] starts the real binary under GNU time (report in
# $BENCH_DIR/time.TAG) with a fresh JetStream store (file storage) on a free port, and
# sets NATS_URL. By default the NATS server is mailbus's embedded one, so the process
# measured is mailbus with its server: the deployment of one binary on a bare machine,
# which is what the targets name. With "external" the same server runs in a process of its
# own (bench/natsserver), and the figures are mailbus's alone.
start_mailbus() {
	local tag=$1 mode=${2:-embedded} port bin=$BIN/mailbus
	[[ $tag == mailbus-base ]] && bin=$BIN/mailbus-base
	port=$(free_port)
	NATS_URL=nats://127.0.0.1:$port
	rm -rf "$BENCH_DIR/store"
	local env=(MAILBUS_DATA_DIR="$BENCH_DIR/store" MAILBUS_EMBEDDED_LISTEN="127.0.0.1:$port")
	if [[ $mode == external ]]; then
		start_natsserver "$port"
		env=(MAILBUS_NATS_URL="$NATS_URL")
	fi
	if [[ -n ${PPROF:-} && -n $PROFILE_TAG ]]; then
		env+=(MAILBUS_BENCH_CPUPROFILE="$PPROF/mailbus-$PROFILE_TAG.pprof")
		[[ -n ${TRACE:-} ]] && env+=(MAILBUS_BENCH_TRACE="$PPROF/mailbus-$PROFILE_TAG.trace")
	fi
	# SSL_CERT_FILE makes Go trust the test CA, so mailbus verifies Dovecot's certificate
	# as it would a real server's.
	# GNU time dies of SIGTERM without a report, so mailbus itself is stopped: the shell
	# between them writes its pid and becomes mailbus (exec), one process measured.
	env "${env[@]}" MAILBUS_HTTP_ADDR= MAILBUS_INSTANCE=bench MAILBUS_LOG_LEVEL=warn SSL_CERT_FILE="${CA:-}" \
		/usr/bin/time -v -o "$BENCH_DIR/time.$tag" \
		bash -c 'echo $$ >"$0"; exec "$@"' "$BENCH_DIR/mailbus.pid" "$bin" serve \
		2>>"$BENCH_DIR/mailbus.log" &
	MAILBUS_TIME_PID=$!
}

# stop_mailbus stops mailbus (SIGTERM, a clean shutdown) and waits until GNU time wrote
# its report, then stops the external NATS server if there is one.
stop_mailbus() {
	if [[ -n $MAILBUS_TIME_PID ]]; then
		for _ in $(seq 50); do # the pid file may lag a start that failed at once
			[[ -s $BENCH_DIR/mailbus.pid ]] && break
			sleep 0.1
		done
		kill -TERM "$(cat "$BENCH_DIR/mailbus.pid")" 2>/dev/null || true
		wait "$MAILBUS_TIME_PID" || true
		rm -f "$BENCH_DIR/mailbus.pid"
		MAILBUS_TIME_PID=
	fi
	stop_natsserver
}

# start_natsserver PORT starts bench/natsserver (the embedded server's configuration in a
# process of its own) under GNU time (report in $BENCH_DIR/time.nats) on a fresh store,
# with a CPU profile when PPROF is set, and waits until it accepts connections.
start_natsserver() {
	rm -rf "$BENCH_DIR/store"
	rm -f "$BENCH_DIR/time.nats"
	local prof=()
	if [[ -n ${PPROF:-} && -n $PROFILE_TAG ]]; then
		prof=(-cpuprofile "$PPROF/nats-$PROFILE_TAG.pprof")
	fi
	/usr/bin/time -v -o "$BENCH_DIR/time.nats" \
		bash -c 'echo $$ >"$0"; exec "$@"' "$BENCH_DIR/nats.pid" "$BIN/natsserver" \
		-listen "127.0.0.1:$1" -dir "$BENCH_DIR/store" "${prof[@]}" 2>>"$BENCH_DIR/nats.log" &
	NATSSERVER_PID=$!
	for _ in $(seq 100); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
			return 0
		fi
		sleep 0.1
	done
	echo "natsserver did not start:" >&2
	tail "$BENCH_DIR/nats.log" >&2 || true
	return 1
}

# stop_natsserver stops the natsserver of start_natsserver (SIGTERM: it writes its profile)
# and waits until GNU time wrote its report.
stop_natsserver() {
	if [[ -n $NATSSERVER_PID ]]; then
		for _ in $(seq 50); do
			[[ -s $BENCH_DIR/nats.pid ]] && break
			sleep 0.1
		done
		kill -TERM "$(cat "$BENCH_DIR/nats.pid")" 2>/dev/null || true
		wait "$NATSSERVER_PID" || true
		rm -f "$BENCH_DIR/nats.pid"
		NATSSERVER_PID=
	fi
}

# cpu_s FILE prints the user+system CPU seconds of a GNU time -v report.
cpu_s() {
	awk -F': ' '/User time|System time/ { s += $2 } END { printf "%.2f", s }' "$1"
}

# peak_rss_mb FILE prints the "Maximum resident set size" of a GNU time -v report in MiB.
peak_rss_mb() {
	awk -F': ' '/Maximum resident set size/ { printf "%.1f", $2 / 1024 }' "$1"
}

# wall_s FILE prints the elapsed wall time of a GNU time -v report in seconds.
wall_s() {
	awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; printf "%.3f", s }' "$1"
}
