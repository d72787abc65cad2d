# shellcheck shell=bash
# Redis for the local test stack: a project-owned redis-server, never the machine's
# shared one on 6379 (whose `default` user may take any connection without a password).
#
# Sourced by dev/stack (after dev/lib/common.sh). Defines:
#   redis_up      start or reuse the server, export and record ROTOR_TEST_REDIS_*
#   redis_down    stop the server (its ACL file and admin password are kept for the next up)
#   redis_status  one line
#
# The server listens on 127.0.0.1 only, with the `default` user off (every connection must
# authenticate) and users kept in an ACL file, so `ACL SAVE` makes ACL changes durable.
#
# Layout:
#   /var/tmp/rotor-stack-<hash of repo path>/redis/
#     redis.conf       written on every start (port, pidfile, logfile, aclfile)
#     users.acl        the ACL file: `default` off, `rotor_admin` (+@all ~* &*), test users
#     admin-password   0600, random, reused while the file exists
#     port             the port the server last ran on
#     redis.pid        pid file (the server daemonizes itself)
#     redis.log        server log

REDIS_ADMIN_USER=rotor_admin
REDIS_PREFERRED_PORT=16379

_redis_err() { printf 'redis: %s\n' "$*" >&2; }
_redis_info() { printf 'redis: %s\n' "$*" >&2; }

_redis_state_dir() {
  local hash
  hash=$(printf '%s' "$REPO" | sha256sum | cut -c1-12)
  printf '/var/tmp/rotor-stack-%s/redis' "$hash"
}

# redis-cli as the admin against 127.0.0.1:PORT. The password goes through REDISCLI_AUTH,
# never the command line (where `ps` would show it).
_redis_cli_admin() {
  local port=$1 pwfile=$2
  shift 2
  REDISCLI_AUTH=$(<"$pwfile") timeout 5 redis-cli --no-auth-warning -h 127.0.0.1 -p "$port" \
    --user "$REDIS_ADMIN_USER" "$@"
}

# True when the admin logs in on PORT and the server answers PING.
_redis_admin_ok() {
  [[ $(_redis_cli_admin "$1" "$2" PING 2>/dev/null) == PONG ]]
}

# True when PORT answers an unauthenticated PING with NOAUTH (the `default` user is off).
_redis_default_off() {
  timeout 5 redis-cli -h 127.0.0.1 -p "$1" PING 2>&1 | grep -q NOAUTH
}

# Puts the `default` and admin lines into the ACL file, keeping every other user.
_redis_write_acl() {
  local acl=$1 pwfile=$2 hash tmp
  hash=$(tr -d '\n' <"$pwfile" | sha256sum | cut -c1-64)
  tmp="$acl.tmp.$$"
  (
    umask 077
    if [[ -f $acl ]]; then
      grep -v -E "^user (default|$REDIS_ADMIN_USER) " "$acl" >"$tmp" || true
    else
      : >"$tmp"
    fi
    printf 'user default off resetpass resetkeys resetchannels -@all\n' >>"$tmp"
    printf 'user %s on #%s ~* &* +@all\n' "$REDIS_ADMIN_USER" "$hash" >>"$tmp"
  )
  mv -f "$tmp" "$acl"
}

_redis_write_conf() {
  local state=$1 port=$2
  (
    umask 077
    cat >"$state/redis.conf" <<EOF
# Written by dev/lib/redis.sh on every start; edits are lost.
bind 127.0.0.1
protected-mode yes
port $port
daemonize yes
pidfile $state/redis.pid
logfile $state/redis.log
dir $state
aclfile $state/users.acl
save ""
appendonly no
EOF
  )
}

_redis_stop() {
  local state=$1
  stack_stop_pidfile "$state/redis.pid" redis-server
}

redis_up() {
  local state pwfile portfile acl port
  state=$(_redis_state_dir)
  pwfile=$state/admin-password portfile=$state/port acl=$state/users.acl

  if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    _redis_info "redis-server is not installed; installing the Debian package"
    stack_apt_install redis-server
    command -v redis-server >/dev/null || {
      _redis_err "redis-server still not found after apt-get install redis-server"
      return 1
    }
  fi

  mkdir -p "$state" && chmod 0700 "$state" || {
    _redis_err "cannot create $state"
    return 1
  }
  if [[ ! -s $pwfile ]]; then
    (umask 077 && stack_random_hex 24 >"$pwfile")
  fi
  chmod 0600 "$pwfile"

  # Reuse a running server when the admin can log in and `default` is off.
  if stack_pid_alive "$state/redis.pid" redis-server; then
    port=$(cat "$portfile" 2>/dev/null || true)
    if [[ -n $port ]] && _redis_admin_ok "$port" "$pwfile" && _redis_default_off "$port"; then
      _redis_info "reusing the running server on 127.0.0.1:$port"
      _redis_record "$port" "$pwfile"
      return 0
    fi
    _redis_info "the running server (port ${port:-unknown}) does not match its state (admin login or default user); restarting it"
    _redis_stop "$state"
  fi

  # Same port as last time when it is free, else the preferred one, else any.
  port=""
  if [[ -s $portfile ]] && stack_port_free "$(<"$portfile")"; then
    port=$(<"$portfile")
  fi
  if [[ -z $port ]]; then
    port=$(stack_free_port "$REDIS_PREFERRED_PORT") || {
      _redis_err "no free loopback port for Redis"
      return 1
    }
  fi
  printf '%s\n' "$port" >"$portfile"

  _redis_write_acl "$acl" "$pwfile"
  _redis_write_conf "$state" "$port"
  : >>"$state/redis.log"
  chmod 0600 "$state/redis.log" "$acl"
  _redis_info "starting redis-server on 127.0.0.1:$port"
  if ! redis-server "$state/redis.conf" 9>&- >"$state/start.log" 2>&1; then
    _redis_err "redis-server failed to start; see $state/start.log and $state/redis.log"
    return 1
  fi
  if ! stack_wait_until 20 "Redis on 127.0.0.1:$port" _redis_admin_ok "$port" "$pwfile"; then
    _redis_err "the admin cannot log in on 127.0.0.1:$port; see $state/redis.log (remove $state to start afresh)"
    return 1
  fi
  if ! _redis_default_off "$port"; then
    _redis_err "127.0.0.1:$port answers without authentication: the default user is not off; see $acl"
    return 1
  fi
  _redis_record "$port" "$pwfile"
  _redis_info "ready on 127.0.0.1:$port (admin $REDIS_ADMIN_USER, log $state/redis.log)"
}

_redis_record() {
  local port=$1 pwfile=$2
  stack_env_set ROTOR_TEST_REDIS_HOST 127.0.0.1
  stack_env_set ROTOR_TEST_REDIS_PORT "$port"
  stack_env_set ROTOR_TEST_REDIS_ADMIN_USER "$REDIS_ADMIN_USER"
  stack_env_set ROTOR_TEST_REDIS_ADMIN_PASSWORD "$(<"$pwfile")"
}

redis_down() {
  local state
  state=$(_redis_state_dir)
  if ! stack_pid_alive "$state/redis.pid" redis-server; then
    _redis_info "not running"
    rm -f "$state/redis.pid"
    return 0
  fi
  _redis_stop "$state"
  _redis_info "stopped the server in $state"
}

redis_status() {
  local state port
  state=$(_redis_state_dir)
  port=$(cat "$state/port" 2>/dev/null || true)
  if ! stack_pid_alive "$state/redis.pid" redis-server; then
    echo "redis:      stopped"
  elif [[ -n $port ]] && _redis_admin_ok "$port" "$state/admin-password"; then
    echo "redis:      accepting connections (127.0.0.1:$port)"
  else
    echo "redis:      not answering (pid $(<"$state/redis.pid"), 127.0.0.1:${port:-?}; log: $state/redis.log)"
  fi
}
