# shellcheck shell=bash
# Shared helpers for dev/stack and dev/lib/*.sh. Sourced, never executed.
#
# Variables (set here, read-only by convention):
#   REPO        repository root
#   STACK_DIR   $REPO/.stack: pid files, logs, data dirs (gitignored, mode 0700)
#   STACK_ENV   $STACK_DIR/env: lines `export KEY='VALUE'`, sourced by dev/test
#   VENV        $REPO/.tools/venv: the Python venv holding `bao` and helm-python-sdk
#
# Functions a service library (dev/lib/NAME.sh) can use:
#   stack_log MSG...                 progress line on stderr
#   stack_die MSG...                 error line on stderr, exit 1
#   stack_env_set KEY VALUE          record KEY in $STACK_ENV (replacing it) and export it here
#   stack_env_get KEY                print KEY's value from $STACK_ENV (status 1 if absent)
#   stack_env_unset KEY...           drop KEYs from $STACK_ENV
#   stack_pid_alive PIDFILE [WORD]   true if the pid in PIDFILE runs (and its command line
#                                    contains WORD, guarding against pid reuse)
#   stack_start_daemon PIDFILE LOG CMD...
#                                    start CMD detached (own session, stdin /dev/null,
#                                    stdout+stderr to LOG), write its pid to PIDFILE
#   stack_stop_pidfile PIDFILE [WORD] TERM, wait up to 15 s, then KILL; remove PIDFILE
#   stack_port_free PORT             true if 127.0.0.1:PORT can be bound now
#   stack_free_port PREFERRED [SPAN] PREFERRED if it (and the SPAN-1 ports after it) are
#                                    free, else a free port from the kernel (same rule)
#   stack_http_status URL [HEADER]   print the HTTP status of GET URL (000 if unreachable);
#                                    HEADER is "Name: value", passed via the environment so
#                                    it never shows in `ps`
#   stack_wait_until SECONDS DESC CMD...
#                                    poll CMD every 0.2 s until it succeeds or time is up
#   stack_random_hex BYTES           random hex string from /dev/urandom
#   stack_apt_install PKG...         apt-get install -y (apt-get update once per run), never
#                                    starting services

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STACK_DIR="$REPO/.stack"
STACK_ENV="$STACK_DIR/env"
VENV="$REPO/.tools/venv"
export REPO STACK_DIR STACK_ENV VENV

stack_log() { printf '[stack] %s\n' "$*" >&2; }
stack_die() {
  printf '[stack] error: %s\n' "$*" >&2
  exit 1
}

stack_init_dir() {
  if [[ ! -d "$STACK_DIR" ]]; then
    mkdir -p "$STACK_DIR"
  fi
  chmod 700 "$STACK_DIR"
}

# Quote VALUE for a POSIX shell: 'it'\''s'.
stack_shell_quote() {
  local s=${1//\'/\'\\\'\'}
  printf "'%s'" "$s"
}

stack_env_set() {
  local key=$1 value=$2
  [[ $key =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || stack_die "stack_env_set: invalid variable name '$key'"
  stack_init_dir
  local tmp="$STACK_ENV.tmp.$$"
  (
    umask 077
    if [[ -f "$STACK_ENV" ]]; then
      grep -v -E "^(export )?${key}=" "$STACK_ENV" >"$tmp" || true
    else
      printf '# Written by dev/stack; source it to reach the local services.\n' >"$tmp"
    fi
    printf 'export %s=%s\n' "$key" "$(stack_shell_quote "$value")" >>"$tmp"
  )
  mv -f "$tmp" "$STACK_ENV"
  export "$key=$value"
}

stack_env_get() {
  local key=$1
  [[ -f "$STACK_ENV" ]] || return 1
  # Evaluate in a subshell so the file cannot change this shell.
  (
    set +u
    unset "$key"
    # shellcheck disable=SC1090
    source "$STACK_ENV" >/dev/null 2>&1
    [[ -n "${!key:-}" ]] || exit 1
    printf '%s' "${!key}"
  )
}

stack_env_unset() {
  [[ -f "$STACK_ENV" ]] || return 0
  local key tmp="$STACK_ENV.tmp.$$"
  cp "$STACK_ENV" "$tmp"
  for key in "$@"; do
    grep -v -E "^(export )?${key}=" "$tmp" >"$tmp.2" || true
    mv -f "$tmp.2" "$tmp"
  done
  mv -f "$tmp" "$STACK_ENV"
}

stack_pid_alive() {
  local pidfile=$1 word=${2:-} pid
  [[ -f "$pidfile" ]] || return 1
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  if [[ -n "$word" ]]; then
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$word" || return 1
  fi
  return 0
}

stack_start_daemon() {
  local pidfile=$1 log=$2
  shift 2
  stack_init_dir
  : >"$log"
  chmod 600 "$log"
  # setsid: own session, so the daemon outlives this script and its terminal. In a
  # non-interactive script we are not a group leader, so setsid execs in place and $!
  # is the daemon's own pid.
  # 9>&-: the daemon must not inherit dev/stack's lock (fd 9), or it would hold the lock
  # for its whole life and block every later `dev/stack up`.
  setsid "$@" </dev/null >>"$log" 2>&1 9>&- &
  echo $! >"$pidfile"
}

stack_stop_pidfile() {
  local pidfile=$1 word=${2:-} pid i
  [[ -f "$pidfile" ]] || return 0
  if stack_pid_alive "$pidfile" "$word"; then
    pid=$(<"$pidfile")
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 75; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
      stack_log "pid $pid did not stop within 15 s; sending KILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$pidfile"
}

stack_port_free() {
  python3 - "$1" <<'PY'
import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
PY
}

stack_free_port() {
  python3 - "$1" "${2:-1}" <<'PY'
import socket, sys
preferred, span = int(sys.argv[1]), int(sys.argv[2])

def free(base):
    socks = []
    try:
        for p in range(base, base + span):
            s = socket.socket()
            socks.append(s)
            s.bind(("127.0.0.1", p))
        return True
    except OSError:
        return False
    finally:
        for s in socks:
            s.close()

if free(preferred):
    print(preferred)
    sys.exit(0)
for _ in range(200):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    if port + span <= 65536 and free(port):
        print(port)
        sys.exit(0)
sys.exit("no free port found")
PY
}

stack_http_status() {
  STACK_HTTP_HEADER="${2:-}" python3 - "$1" <<'PY'
import os, sys, urllib.request, urllib.error
req = urllib.request.Request(sys.argv[1])
header = os.environ.get("STACK_HTTP_HEADER", "")
if header:
    name, _, value = header.partition(":")
    req.add_header(name.strip(), value.strip())
try:
    with urllib.request.urlopen(req, timeout=3) as resp:
        print(resp.status)
except urllib.error.HTTPError as e:
    print(e.code)
except Exception:
    print("000")
PY
}

stack_wait_until() {
  local seconds=$1 desc=$2
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@"; do
    if ((SECONDS >= deadline)); then
      stack_log "timed out after ${seconds}s waiting for $desc"
      return 1
    fi
    sleep 0.2
  done
}

stack_random_hex() {
  od -An -tx1 -N "${1:-24}" /dev/urandom | tr -d ' \n'
}

STACK_APT_UPDATED=${STACK_APT_UPDATED:-}
stack_apt_install() {
  command -v apt-get >/dev/null || stack_die "apt-get not found: install $* by hand"
  if [[ -z "$STACK_APT_UPDATED" ]]; then
    stack_log "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || stack_die "apt-get update failed"
    STACK_APT_UPDATED=1
  fi
  stack_log "apt-get install -y $*"
  # A policy-rc.d answering 101 keeps packages (prometheus) from starting their services.
  local policy=/usr/sbin/policy-rc.d own_policy=""
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\n# temporary, from rotor dev/stack\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    own_policy=1
  fi
  local rc=0
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2 || rc=$?
  if [[ -n $own_policy ]]; then rm -f "$policy"; fi
  ((rc == 0)) || stack_die "apt-get install $* failed"
}
