# shellcheck shell=bash
# RabbitMQ for the local test stack: the machine's broker (started with
# `rabbitmq-server -detached` when it is down), its management API on 127.0.0.1:15672, and
# an administrator `rotor_admin` the tests act through.
#
# Sourced by dev/stack (after dev/lib/common.sh). Defines:
#   rabbitmq_up      make the above true (quick when it already is), record ROTOR_TEST_RABBITMQ_*
#   rabbitmq_down    stop the broker only if rabbitmq_up started it; users are kept
#   rabbitmq_status  one line
#
# Also installs `amqp-tools` (amqp-consume), which the tests use to hold real AMQP
# connections open.
#
# Machine state it changes: enables the rabbitmq_management plugin, and appends
# `management.tcp.ip = 127.0.0.1` / `management.tcp.port = 15672` to
# /etc/rabbitmq/rabbitmq.conf when the file sets no management listener, so the API stays on
# loopback after a broker restart. Its own state:
#   /var/tmp/rotor-stack-rabbitmq/      shared by every checkout: the broker and its admin
#                                       user are the machine's, so they share one password
#     admin-password      0600, random (or adopted from the checkout that set it up first),
#                         reused while the file exists
#     setup.lock          flock held while starting the broker, changing its config or its
#                         admin: two checkouts setting up at once take turns
#   /var/tmp/rotor-stack-<hash of repo path>/rabbitmq/
#     started-by-stack    present when this checkout's rabbitmq_up started the broker
#                         (rabbitmq_down stops it then)
#     admin-password      the per-checkout password of earlier versions (adopted once)
#
# Idempotent, also when several checkouts run it at once: every step that changes the
# machine runs under setup.lock and re-checks first, and the admin is added-or-changed
# (an add that finds the user already there sets its password instead).

RABBITMQ_ADMIN_USER=rotor_admin
RABBITMQ_MGMT_PORT=15672
RABBITMQ_AMQP_PORT=5672
RABBITMQ_CONF=/etc/rabbitmq/rabbitmq.conf
RABBITMQ_SHARED_DIR=/var/tmp/rotor-stack-rabbitmq

_rmq_err() { printf 'rabbitmq: %s\n' "$*" >&2; }
_rmq_info() { printf 'rabbitmq: %s\n' "$*" >&2; }

_rmq_state_dir() {
  local hash
  hash=$(printf '%s' "$REPO" | sha256sum | cut -c1-12)
  printf '/var/tmp/rotor-stack-%s/rabbitmq' "$hash"
}

_rmq_url() { printf 'http://127.0.0.1:%s' "$RABBITMQ_MGMT_PORT"; }

# Runs CMD... in a subshell holding the machine-wide set-up lock (fd 8; whatever the
# command starts for good must close it, like fd 9 of dev/stack's own lock).
_rmq_locked() {
  local lock=$RABBITMQ_SHARED_DIR/setup.lock
  (
    if ! flock -n 8; then
      _rmq_info "another checkout is setting up RabbitMQ; waiting for it (up to 10 min)"
      flock -w 600 8 || {
        _rmq_err "could not lock $lock"
        exit 1
      }
    fi
    "$@"
  ) 8>"$lock"
}

# Under the lock: the shared admin password file, created once. A checkout that set up
# the broker before the password was shared keeps its password (the user has it).
_rmq_shared_password() {
  local pwfile=$1 legacy=$2 tmp
  [[ -s $pwfile ]] && return 0
  tmp=$pwfile.tmp.$$
  if [[ -s $legacy ]]; then
    (umask 077 && cp "$legacy" "$tmp")
  else
    (umask 077 && stack_random_hex 24 >"$tmp")
  fi && chmod 0600 "$tmp" && mv -f "$tmp" "$pwfile" || {
    rm -f "$tmp"
    _rmq_err "cannot write $pwfile"
    return 1
  }
}

# HTTP status of GET /api/PATH as the admin (000 when nothing answers). The credentials
# travel in a header passed through the environment, never on a command line.
_rmq_admin_status() {
  local path=$1 pwfile=$2 auth
  auth=$(printf '%s:%s' "$RABBITMQ_ADMIN_USER" "$(<"$pwfile")" | base64 -w0)
  stack_http_status "$(_rmq_url)/api/$path" "Authorization: Basic $auth"
}

# True when the admin logs in, holds the administrator tag (GET /api/users/NAME needs it)
# and has permissions on the vhost `/`.
_rmq_admin_ok() {
  local pwfile=$1
  [[ -s $pwfile ]] &&
    [[ $(_rmq_admin_status "users/$RABBITMQ_ADMIN_USER" "$pwfile") == 200 ]] &&
    [[ $(_rmq_admin_status "permissions/%2F/$RABBITMQ_ADMIN_USER" "$pwfile") == 200 ]]
}

# True when the management API answers at all (401 without credentials).
_rmq_api_answers() {
  [[ $(stack_http_status "$(_rmq_url)/api/overview") =~ ^(200|401)$ ]]
}

_rmq_node_up() {
  timeout 20 rabbitmq-diagnostics -q ping >/dev/null 2>&1
}

_rmq_install() {
  if ! command -v rabbitmq-server >/dev/null || ! command -v rabbitmqctl >/dev/null; then
    _rmq_info "rabbitmq-server is not installed; installing the Debian package"
    stack_apt_install rabbitmq-server
  fi
  if ! command -v amqp-consume >/dev/null; then
    stack_apt_install amqp-tools
  fi
}

# Keeps the management listener on loopback across broker restarts. Under the lock, so
# two checkouts never both append.
_rmq_pin_listener_config() {
  if [[ -f $RABBITMQ_CONF ]] && grep -q -E '^[[:space:]]*management\.(tcp|listener)\.' "$RABBITMQ_CONF"; then
    return 0
  fi
  _rmq_info "adding a loopback management listener to $RABBITMQ_CONF"
  {
    printf '# Added by rotor dev/lib/rabbitmq.sh: management API on loopback only.\n'
    printf 'management.tcp.ip = 127.0.0.1\n'
    printf 'management.tcp.port = %s\n' "$RABBITMQ_MGMT_PORT"
  } >>"$RABBITMQ_CONF" || {
    _rmq_err "cannot write $RABBITMQ_CONF"
    return 1
  }
}

_rmq_enable_management() {
  # The running node read its config at boot: give the plugin its loopback listener now.
  timeout 30 rabbitmqctl -q eval \
    "application:set_env(rabbitmq_management, tcp_config, [{ip, \"127.0.0.1\"}, {port, $RABBITMQ_MGMT_PORT}])." \
    >/dev/null 2>&1 || _rmq_info "could not preset the management listener at run time; using $RABBITMQ_CONF"
  _rmq_info "enabling the rabbitmq_management plugin"
  if ! timeout 120 rabbitmq-plugins -q enable rabbitmq_management >&2 9>&- 8>&-; then
    _rmq_err "rabbitmq-plugins enable rabbitmq_management failed; see /var/log/rabbitmq/"
    return 1
  fi
}

# Creates the admin, or (it exists already) sets its password; then its tag and
# permissions. Add-or-change rather than look-then-add, so a user another process added
# in between is no error. Passwords go to rabbitmqctl on stdin, never on its command line.
_rmq_ensure_admin() {
  local pwfile=$1 out
  if out=$(timeout 30 rabbitmqctl -q add_user "$RABBITMQ_ADMIN_USER" <"$pwfile" 2>&1); then
    _rmq_info "created the administrator $RABBITMQ_ADMIN_USER"
  elif [[ $out == *already*exist* ]]; then
    _rmq_info "resetting the password, tag and permissions of $RABBITMQ_ADMIN_USER"
    timeout 30 rabbitmqctl -q change_password "$RABBITMQ_ADMIN_USER" <"$pwfile" >/dev/null || {
      _rmq_err "rabbitmqctl change_password $RABBITMQ_ADMIN_USER failed"
      return 1
    }
  else
    _rmq_err "rabbitmqctl add_user $RABBITMQ_ADMIN_USER failed: $out"
    return 1
  fi
  timeout 30 rabbitmqctl -q set_user_tags "$RABBITMQ_ADMIN_USER" administrator >/dev/null &&
    timeout 30 rabbitmqctl -q set_permissions -p / "$RABBITMQ_ADMIN_USER" '.*' '.*' '.*' >/dev/null || {
    _rmq_err "rabbitmqctl set_user_tags / set_permissions for $RABBITMQ_ADMIN_USER failed"
    return 1
  }
}

_rmq_record() {
  local pwfile=$1
  stack_env_set ROTOR_TEST_RABBITMQ_URL "$(_rmq_url)"
  stack_env_set ROTOR_TEST_RABBITMQ_AMQP_PORT "$RABBITMQ_AMQP_PORT"
  stack_env_set ROTOR_TEST_RABBITMQ_ADMIN_USER "$RABBITMQ_ADMIN_USER"
  stack_env_set ROTOR_TEST_RABBITMQ_ADMIN_PASSWORD "$(<"$pwfile")"
}

rabbitmq_up() {
  local state pwfile
  state=$(_rmq_state_dir)
  pwfile=$RABBITMQ_SHARED_DIR/admin-password
  mkdir -p "$state" "$RABBITMQ_SHARED_DIR" && chmod 0700 "$state" "$RABBITMQ_SHARED_DIR" || {
    _rmq_err "cannot create $state or $RABBITMQ_SHARED_DIR"
    return 1
  }
  _rmq_locked _rmq_shared_password "$pwfile" "$state/admin-password" || return 1

  # Quick path: everything is in place already.
  if command -v amqp-consume >/dev/null && _rmq_admin_ok "$pwfile" && ! stack_port_free "$RABBITMQ_AMQP_PORT"; then
    _rmq_info "reusing the broker ($(_rmq_url), amqp 127.0.0.1:$RABBITMQ_AMQP_PORT)"
    _rmq_record "$pwfile"
    return 0
  fi

  _rmq_install
  _rmq_locked _rmq_setup "$state" "$pwfile" || return 1
  if stack_port_free "$RABBITMQ_AMQP_PORT"; then
    _rmq_err "nothing listens for AMQP on 127.0.0.1:$RABBITMQ_AMQP_PORT; check listeners.tcp in $RABBITMQ_CONF"
    return 1
  fi
  _rmq_record "$pwfile"
  _rmq_info "ready: $(_rmq_url) (admin $RABBITMQ_ADMIN_USER), amqp 127.0.0.1:$RABBITMQ_AMQP_PORT"
}

# Under the lock (each step checks again, as another checkout may have done it): starts
# the broker when it is down, pins the management listener, enables the management API
# and makes the admin log in.
_rmq_setup() {
  local state=$1 pwfile=$2
  if ! _rmq_node_up; then
    _rmq_info "the broker is down; starting it (rabbitmq-server -detached)"
    rabbitmq-server -detached </dev/null >"$state/start.log" 2>&1 9>&- 8>&- || {
      _rmq_err "rabbitmq-server -detached failed; see $state/start.log and /var/log/rabbitmq/"
      return 1
    }
    : >"$state/started-by-stack"
    stack_wait_until 120 "the RabbitMQ node" _rmq_node_up || {
      _rmq_err "the broker did not come up; see /var/log/rabbitmq/"
      return 1
    }
    timeout 120 rabbitmqctl -q await_startup >/dev/null 2>&1 || true
  fi

  _rmq_pin_listener_config || return 1
  if ! _rmq_api_answers; then
    _rmq_enable_management || return 1
    stack_wait_until 60 "the management API on $(_rmq_url)" _rmq_api_answers || {
      _rmq_err "the management API does not answer on $(_rmq_url); is port $RABBITMQ_MGMT_PORT taken? see /var/log/rabbitmq/"
      return 1
    }
  fi

  if ! _rmq_admin_ok "$pwfile"; then
    _rmq_ensure_admin "$pwfile" || return 1
    stack_wait_until 20 "the admin login on $(_rmq_url)" _rmq_admin_ok "$pwfile" || {
      _rmq_err "$RABBITMQ_ADMIN_USER cannot use the management API on $(_rmq_url)"
      return 1
    }
  fi
}

rabbitmq_down() {
  local state
  state=$(_rmq_state_dir)
  if [[ ! -f $state/started-by-stack ]]; then
    _rmq_info "leaving the machine's broker running (dev/stack did not start it)"
    return 0
  fi
  if _rmq_node_up; then
    timeout 60 rabbitmqctl -q stop >/dev/null 2>&1 || {
      _rmq_err "rabbitmqctl stop failed"
      return 1
    }
    _rmq_info "stopped the broker dev/stack had started"
  fi
  rm -f "$state/started-by-stack"
}

rabbitmq_status() {
  local pwfile
  pwfile=$RABBITMQ_SHARED_DIR/admin-password
  if _rmq_admin_ok "$pwfile"; then
    echo "rabbitmq:   running ($(_rmq_url), amqp 127.0.0.1:$RABBITMQ_AMQP_PORT)"
  elif _rmq_api_answers; then
    echo "rabbitmq:   management API answers but $RABBITMQ_ADMIN_USER cannot log in (run dev/stack up)"
  elif ! stack_port_free "$RABBITMQ_AMQP_PORT"; then
    echo "rabbitmq:   running without its management API (run dev/stack up)"
  else
    echo "rabbitmq:   stopped"
  fi
}
