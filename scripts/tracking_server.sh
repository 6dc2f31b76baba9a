#!/usr/bin/env bash
# A shared MLflow tracking server for ptexp: PostgreSQL as the backend store and `mlflow server` (REST API, UI,
# artifact proxy) in front of it, both listening on 127.0.0.1 only, both in the background, all state in one folder.
#
# Usage: scripts/tracking_server.sh COMMAND
#   start          initialise the PostgreSQL cluster (first time only), start it, create the role and database
#                  `mlflow`, start `mlflow server` and wait until its /health answers; prints the tracking URI
#   stop           stop mlflow server, then PostgreSQL (fast shutdown); nothing running is not an error
#   status         say what runs; exit status 0 when both run and answer, 3 otherwise
#   uri            print the tracking URI, e.g.  python -m ptexp tracking.uri=$(scripts/tracking_server.sh uri)
#   psql [ARGS]    psql on the database `mlflow` as role `mlflow`, e.g.  psql -c 'SELECT status FROM runs'
#
# Settings (environment variables):
#   PTEXP_SERVER_DIR      state: logs, pid file, credentials   (default: <repo>/outputs/tracking-server)
#   PTEXP_PG_DIR          PostgreSQL data directory             (default: $PTEXP_SERVER_DIR/pgdata)
#   PTEXP_ARTIFACTS_DIR   where the server keeps proxied artifacts (default: $PTEXP_SERVER_DIR/mlartifacts)
#   PTEXP_PG_PORT         PostgreSQL port on 127.0.0.1          (default: 5433)
#   PTEXP_MLFLOW_PORT     mlflow server port on 127.0.0.1       (default: 5001)
#   PTEXP_MLFLOW_WORKERS  mlflow server worker processes        (default: 2)
#   PTEXP_START_TIMEOUT   seconds to wait for /health           (default: 180)
#   PTEXP_PYTHON          Python with mlflow and psycopg2       (default: <repo>/.venv/bin/python, else python3)
#   PTEXP_PG_BIN          folder of initdb, pg_ctl, psql        (default: pg_ctl's on PATH, else /usr/lib/postgresql/*/bin)
#   PTEXP_PG_USER         run as root only: the system user that runs PostgreSQL, created when missing (default: postgres)
#   MLFLOW_SERVER_ENABLE_JOB_EXECUTION  MLflow 3's job runner (GenAI jobs, 7 more processes): off unless set to true
#
# Needs the PostgreSQL server binaries (Debian: apt-get install postgresql) and, in the Python environment, mlflow and
# psycopg2: pip install -e ".[server]". PostgreSQL refuses to run as root, so when this script runs as root it runs
# every PostgreSQL command as PTEXP_PG_USER (runuser, else su), who must be able to reach the data directory; as a
# normal user it runs them as that user. Administration uses a Unix socket inside the data directory (peer
# authentication); over TCP (127.0.0.1) only password logins work. The role `mlflow` gets a random password, kept in
# $PTEXP_SERVER_DIR/pgpass (mode 600) and read by libpq through PGPASSFILE, so it is on no command line.
# Ports take effect at start: stop, change PTEXP_*_PORT, start. Artifacts: with an http tracking.uri, ptexp creates
# its experiments without an artifact location (ptexp/tracking.py), so clients upload artifacts through the server
# (mlflow-artifacts:/) into PTEXP_ARTIFACTS_DIR; tracking.artifact_root=URI sets another location per experiment.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HOST=127.0.0.1
DB=mlflow
ROLE=mlflow

abspath() { case $1 in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$PWD/$1" ;; esac }
die() {
	printf 'error: %s\n' "$*" >&2
	exit 1
}
say() { printf '[tracking-server] %s\n' "$*"; }
log_tail() { # FILE [LINES]: the end of a log, on stderr
	if [ -s "$1" ]; then
		printf -- '--- last lines of %s ---\n' "$1" >&2
		tail -n "${2:-30}" "$1" >&2
	fi
}
session_log() { # the mlflow log of the latest start only (each start writes a "=== " line first), on stderr
	printf -- '--- %s (this start) ---\n' "$MLFLOW_LOG" >&2
	awk '/^=== /{n=0} {line[n++]=$0} END{for (i = (n > 40 ? n - 40 : 0); i < n; i++) print line[i]}' "$MLFLOW_LOG" >&2
}
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

SERVER_DIR=$(abspath "${PTEXP_SERVER_DIR:-$ROOT/outputs/tracking-server}")
PG_DIR=$(abspath "${PTEXP_PG_DIR:-$SERVER_DIR/pgdata}")
ARTIFACTS_DIR=$(abspath "${PTEXP_ARTIFACTS_DIR:-$SERVER_DIR/mlartifacts}")
PG_PORT=${PTEXP_PG_PORT:-5433}
MLFLOW_PORT=${PTEXP_MLFLOW_PORT:-5001}
WORKERS=${PTEXP_MLFLOW_WORKERS:-2}
START_TIMEOUT=${PTEXP_START_TIMEOUT:-180}
for setting in PG_PORT MLFLOW_PORT WORKERS START_TIMEOUT; do
	[[ ${!setting} =~ ^[1-9][0-9]*$ ]] || die "PTEXP_$setting=${!setting}: not a positive integer"
done
[ "$PG_PORT" != "$MLFLOW_PORT" ] || die "PTEXP_PG_PORT and PTEXP_MLFLOW_PORT are both $PG_PORT; valid: two different ports"

PG_LOG=$SERVER_DIR/postgres.log
MLFLOW_LOG=$SERVER_DIR/mlflow.log
MLFLOW_PID=$SERVER_DIR/mlflow.pid
PGPASS=$SERVER_DIR/pgpass
URI=http://$HOST:$MLFLOW_PORT
BACKEND_URI=postgresql+psycopg2://$ROLE@$HOST:$PG_PORT/$DB # the password comes from PGPASSFILE

if [ -n "${PTEXP_PYTHON:-}" ]; then
	PY=$PTEXP_PYTHON
elif [ -x "$ROOT/.venv/bin/python" ]; then
	PY=$ROOT/.venv/bin/python
else
	PY=$(command -v python3 || echo python3)
fi

IS_ROOT=false
if [ "$(id -u)" = 0 ]; then
	IS_ROOT=true
	PG_USER=${PTEXP_PG_USER:-postgres}
else
	PG_USER=$(id -un)
fi

# --- helpers --------------------------------------------------------------------------------------------------------

pg_bin() { # the folder of initdb, pg_ctl and psql
	local dir tool
	if [ -n "${PTEXP_PG_BIN:-}" ]; then
		dir=$PTEXP_PG_BIN
	elif command -v pg_ctl >/dev/null 2>&1; then
		dir=$(dirname "$(readlink -f "$(command -v pg_ctl)")")
	else
		dir=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
	fi
	for tool in initdb pg_ctl psql; do
		[ -x "$dir/$tool" ] || die "no PostgreSQL $tool in '$dir': install the server (Debian: apt-get install postgresql) or set PTEXP_PG_BIN to its bin folder"
	done
	printf '%s\n' "$dir"
}

as_pg() { # run a command as the user who owns the cluster (never root); without the lock's fd 9, which the
	# postmaster would otherwise inherit and hold for its whole life
	if ! $IS_ROOT; then
		"$@" 9>&-
	elif command -v runuser >/dev/null 2>&1; then
		(cd / && runuser -u "$PG_USER" -- "$@" 9>&-)
	else
		(cd / && su -s /bin/bash "$PG_USER" -c "$(printf '%q ' "$@")" 9>&-)
	fi
}

ensure_pg_user() { # as root: PostgreSQL needs a non-root system user
	$IS_ROOT || return 0
	if ! id -u "$PG_USER" >/dev/null 2>&1; then
		say "creating the system user $PG_USER (PostgreSQL refuses to run as root)"
		local nologin
		nologin=$(command -v nologin || echo /bin/false)
		if command -v useradd >/dev/null 2>&1; then
			useradd --system --user-group --no-create-home --home-dir /nonexistent --shell "$nologin" "$PG_USER"
		elif command -v adduser >/dev/null 2>&1; then # BusyBox (Alpine)
			adduser -S -D -H -s "$nologin" "$PG_USER"
		else
			die "cannot create the system user $PG_USER (no useradd or adduser): create it, or set PTEXP_PG_USER to an existing non-root user"
		fi
	fi
	[ "$(id -u "$PG_USER")" != 0 ] || die "PTEXP_PG_USER=$PG_USER is root; valid: a non-root user"
}

alive() { # PID: a running process (a zombie is not: an init that does not reap leaves them)
	kill -0 "$1" 2>/dev/null || return 1
	local state
	state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
	[ "$state" != Z ]
}

group_alive() { # PGID: some process of that process group runs
	local pid
	command -v pgrep >/dev/null 2>&1 || {
		alive "$1"
		return
	}
	for pid in $(pgrep -g "$1" 2>/dev/null); do
		if alive "$pid"; then return 0; fi
	done
	return 1
}

mlflow_pid() { # the pid of our mlflow server, if it runs
	local pid
	[ -f "$MLFLOW_PID" ] || return 1
	pid=$(cat "$MLFLOW_PID")
	[[ $pid =~ ^[0-9]+$ ]] && alive "$pid" || return 1
	[ ! -r "/proc/$pid/cmdline" ] || tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q mlflow || return 1
	printf '%s\n' "$pid"
}

healthy() { # mlflow server's /health answers 200
	if command -v curl >/dev/null 2>&1; then
		curl --noproxy '*' -fsS -m 5 -o /dev/null "$URI/health" 2>/dev/null
	else
		"$PY" -c 'import sys, urllib.request as u; u.build_opener(u.ProxyHandler({})).open(sys.argv[1], timeout=5)' \
			"$URI/health" 2>/dev/null
	fi
}

port_taken() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

pg_running() { [ -f "$PG_DIR/PG_VERSION" ] && as_pg "$PG_BIN/pg_ctl" status -D "$PG_DIR" >/dev/null 2>&1; }

psql_admin() { # SQL on stdin, as the cluster's superuser through the Unix socket in the data directory
	as_pg "$PG_BIN/psql" -h "$PG_DIR" -p "$PG_PORT" -U "$PG_USER" -d postgres -X -q -A -t -v ON_ERROR_STOP=1
}

lock() { # one start/stop at a time
	mkdir -p "$SERVER_DIR"
	if command -v flock >/dev/null 2>&1; then
		exec 9>"$SERVER_DIR/.lock"
		flock -w "$((START_TIMEOUT + 120))" 9 || die "another start/stop holds $SERVER_DIR/.lock"
	fi
}

# --- PostgreSQL -----------------------------------------------------------------------------------------------------

init_cluster() {
	[ ! -f "$PG_DIR/PG_VERSION" ] || return 0
	if [ -d "$PG_DIR" ] && [ -n "$(ls -A "$PG_DIR")" ]; then
		die "$PG_DIR is not empty and holds no PostgreSQL cluster; valid: an empty or new folder (PTEXP_PG_DIR)"
	fi
	mkdir -p "$PG_DIR"
	if $IS_ROOT; then chown "$PG_USER:" "$PG_DIR"; fi
	chmod 700 "$PG_DIR"
	as_pg test -w "$PG_DIR" ||
		die "user $PG_USER cannot write $PG_DIR: its parent folders must be searchable by $PG_USER (chmod o+x), or set PTEXP_SERVER_DIR / PTEXP_PG_DIR elsewhere"
	say "initialising a PostgreSQL cluster in $PG_DIR (user $PG_USER)"
	if ! as_pg "$PG_BIN/initdb" -D "$PG_DIR" -U "$PG_USER" --encoding=UTF8 --locale=C \
		--auth-local=peer --auth-host=scram-sha-256 >"$SERVER_DIR/initdb.log" 2>&1; then
		log_tail "$SERVER_DIR/initdb.log"
		die "initdb failed (log: $SERVER_DIR/initdb.log)"
	fi
	printf "\n# ptexp: scripts/tracking_server.sh rewrites ptexp.conf at every start\ninclude_if_exists = 'ptexp.conf'\n" |
		as_pg tee -a "$PG_DIR/postgresql.conf" >/dev/null
}

start_postgres() {
	case $PG_DIR in *"'"*) die "PTEXP_PG_DIR must not contain a single quote: $PG_DIR" ;; esac
	# The Unix socket lives in the data directory (mode 700): only the cluster's owner reaches it.
	((${#PG_DIR} + 20 <= 107)) || die "the socket path in $PG_DIR would exceed 107 characters; set a shorter PTEXP_PG_DIR"
	printf "listen_addresses = '%s'\nport = %s\nunix_socket_directories = '%s'\n" "$HOST" "$PG_PORT" "$PG_DIR" |
		as_pg tee "$PG_DIR/ptexp.conf" >/dev/null
	if pg_running; then
		say "PostgreSQL already running (data: $PG_DIR)"
		return 0
	fi
	! port_taken "$PG_PORT" || die "port $PG_PORT on $HOST is taken by another program; set PTEXP_PG_PORT"
	touch "$PG_LOG"
	if $IS_ROOT; then chown "$PG_USER:" "$PG_LOG"; fi
	say "starting PostgreSQL on $HOST:$PG_PORT (log: $PG_LOG)"
	if ! as_pg "$PG_BIN/pg_ctl" start -D "$PG_DIR" -l "$PG_LOG" -w -t 60 >/dev/null; then
		log_tail "$PG_LOG"
		die "PostgreSQL did not start (log: $PG_LOG)"
	fi
}

ensure_database() { # role and database `mlflow`; the role's password is the one in $PGPASS
	local password
	if [ ! -s "$PGPASS" ]; then
		password=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
		(umask 077 && printf '%s:*:%s:%s:%s\n' "$HOST" "$DB" "$ROLE" "$password" >"$PGPASS")
	fi
	chmod 600 "$PGPASS"
	password=$(head -n 1 "$PGPASS" | cut -d: -f5)
	[[ $password =~ ^[0-9a-f]{16,}$ ]] || die "$PGPASS is not as this script writes it: delete it and run start again"
	if [ -z "$(psql_admin <<<"SELECT 1 FROM pg_roles WHERE rolname = '$ROLE'")" ]; then
		say "creating role $ROLE"
		psql_admin <<<"CREATE ROLE $ROLE LOGIN PASSWORD '$password'"
	else
		psql_admin <<<"ALTER ROLE $ROLE LOGIN PASSWORD '$password'"
	fi
	if [ -z "$(psql_admin <<<"SELECT 1 FROM pg_database WHERE datname = '$DB'")" ]; then
		say "creating database $DB"
		psql_admin <<<"CREATE DATABASE $DB OWNER $ROLE"
	fi
}

stop_postgres() {
	if ! pg_running; then
		say "PostgreSQL: not running"
		return 0
	fi
	say "stopping PostgreSQL"
	as_pg "$PG_BIN/pg_ctl" stop -D "$PG_DIR" -m fast -w -t 60 >/dev/null || die "PostgreSQL did not stop (log: $PG_LOG)"
}

# --- mlflow server --------------------------------------------------------------------------------------------------

stop_mlflow() {
	local pid
	pid=$(mlflow_pid || true)
	if [ -z "$pid" ]; then
		rm -f "$MLFLOW_PID"
		say "mlflow server: not running"
		return 0
	fi
	say "stopping mlflow server (pid $pid)"
	# It leads its own process group (setsid): the signal reaches its workers too.
	kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 60); do
		group_alive "$pid" || break
		sleep 0.5
	done
	if group_alive "$pid"; then
		say "mlflow server still runs after 30 s: SIGKILL"
		kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$MLFLOW_PID"
}

wait_healthy() { # PID: until /health answers; stop the server and fail if it dies or takes too long
	local pid=$1 deadline=$((SECONDS + START_TIMEOUT))
	until healthy; do
		if ! alive "$pid"; then
			rm -f "$MLFLOW_PID"
			session_log
			die "mlflow server exited during start-up (log: $MLFLOW_LOG)"
		fi
		if ((SECONDS >= deadline)); then
			session_log
			stop_mlflow >/dev/null
			die "mlflow server did not answer $URI/health within ${START_TIMEOUT} s, so it was stopped (log: $MLFLOW_LOG; on a slow machine raise PTEXP_START_TIMEOUT)"
		fi
		sleep 1
	done
}

start_mlflow() {
	local pid launcher=()
	pid=$(mlflow_pid || true)
	if [ -n "$pid" ]; then
		say "mlflow server already running (pid $pid)"
		wait_healthy "$pid"
		return 0
	fi
	! port_taken "$MLFLOW_PORT" || die "port $MLFLOW_PORT on $HOST is taken by another program; set PTEXP_MLFLOW_PORT"
	mkdir -p "$ARTIFACTS_DIR"
	if command -v setsid >/dev/null 2>&1; then launcher=(setsid); fi
	say "starting mlflow server on $URI (log: $MLFLOW_LOG)"
	printf '\n=== %s: mlflow server --backend-store-uri %s --port %s ===\n' "$(date '+%F %T')" "$BACKEND_URI" \
		"$MLFLOW_PORT" >>"$MLFLOW_LOG"
	(
		exec 9>&- # the lock stays with this script
		cd "$SERVER_DIR"
		export PGPASSFILE=$PGPASS MLFLOW_DISABLE_TELEMETRY=${MLFLOW_DISABLE_TELEMETRY:-true} DO_NOT_TRACK=${DO_NOT_TRACK:-true}
		# MLflow 3's job runner (GenAI jobs; 7 huey worker processes) is of no use to ptexp: off unless asked for.
		export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}
		exec ${launcher[@]+"${launcher[@]}"} "$PY" -m mlflow server \
			--backend-store-uri "$BACKEND_URI" \
			--artifacts-destination "$ARTIFACTS_DIR" --serve-artifacts \
			--host "$HOST" --port "$MLFLOW_PORT" --workers "$WORKERS"
	) >>"$MLFLOW_LOG" 2>&1 </dev/null &
	pid=$!
	printf '%s\n' "$pid" >"$MLFLOW_PID"
	wait_healthy "$pid"
}

# --- commands -------------------------------------------------------------------------------------------------------

cmd_start() {
	PG_BIN=$(pg_bin)
	"$PY" -c 'import mlflow, psycopg2' 2>/dev/null ||
		die "$PY lacks mlflow or psycopg2: pip install -e \".[server]\" (psycopg2-binary), or set PTEXP_PYTHON"
	lock
	ensure_pg_user
	init_cluster
	start_postgres
	ensure_database
	start_mlflow
	say "PostgreSQL $HOST:$PG_PORT, database $DB (data: $PG_DIR)"
	say "mlflow server pid $(cat "$MLFLOW_PID"), artifacts in $ARTIFACTS_DIR"
	cat <<EOF
Tracking URI: $URI
Log to it:    python -m ptexp tracking.uri=$URI
A sweep:      python -m ptexp -m hydra/launcher=joblib seed=1,2,3 tracking.uri=$URI
The UI:       $URI    (from another machine: ssh -L $MLFLOW_PORT:$HOST:$MLFLOW_PORT THIS_HOST)
Stop:         $0 stop
EOF
}

cmd_stop() {
	PG_BIN=$(pg_bin)
	lock
	stop_mlflow
	stop_postgres
}

cmd_status() {
	local pid rc=0
	PG_BIN=$(pg_bin)
	if pg_running; then
		say "PostgreSQL: running on $HOST:$PG_PORT (data: $PG_DIR)"
	else
		say "PostgreSQL: not running (data: $PG_DIR)"
		rc=3
	fi
	pid=$(mlflow_pid || true)
	if [ -z "$pid" ]; then
		say "mlflow server: not running"
		rc=3
	elif healthy; then
		say "mlflow server: running (pid $pid) at $URI"
	else
		say "mlflow server: pid $pid, but $URI/health does not answer (starting, or stuck: see $MLFLOW_LOG)"
		rc=3
	fi
	return "$rc"
}

cmd_psql() {
	PG_BIN=$(pg_bin)
	[ -s "$PGPASS" ] || die "no $PGPASS: run $0 start first"
	PGPASSFILE=$PGPASS exec "$PG_BIN/psql" -h "$HOST" -p "$PG_PORT" -U "$ROLE" -d "$DB" -X "$@"
}

case ${1:-} in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
uri) printf '%s\n' "$URI" ;;
psql)
	shift
	cmd_psql "$@"
	;;
-h | --help | help) usage ;;
*)
	usage >&2
	exit 2
	;;
esac
