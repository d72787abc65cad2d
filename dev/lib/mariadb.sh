# shellcheck shell=bash
# MariaDB for the local test stack: a project-owned instance, never the machine's shared
# server (whose accounts and settings are not ours to change).
#
# Sourced by dev/stack (after dev/lib/common.sh). Defines:
#   mariadb_up      create / start / reuse the instance, record ROTOR_TEST_MYSQL_*
#   mariadb_down    stop the instance (data, certificates and admin password are kept)
#   mariadb_status  one line: `mariadb:    accepting connections (127.0.0.1:PORT)`
#
# Layout (the mysql user must traverse to it, so it lives outside the repo):
#   /var/tmp/rotor-stack-<hash of repo path>/mariadb/
#     data/            datadir (mariadb-install-db, owned by the server user)
#     run/             socket and mariadbd's own pid file
#     tls/             self-signed CA + server certificate for 127.0.0.1 / localhost
#                      (ca.crt is ROTOR_TEST_MYSQL_CA_FILE)
#     admin-password   0600, random per instance, reused while the instance exists
#     admin.cnf        0600 client option file for the admin (keeps the password off `ps`)
#     port             the port the instance last ran on
#     mariadbd.pid     pid of the running server (as started from here)
#     mariadb.log      server log (stdout + stderr of mariadbd)
#     install.log      output of mariadb-install-db
#
# Accounts: root@localhost authenticates by unix socket only (no password, no TCP);
# rotor_admin@127.0.0.1 and rotor_admin@localhost have a password and ALL PRIVILEGES
# WITH GRANT OPTION (they create users, ALTER USER and KILL sessions in tests).

MYSQL_ADMIN_USER=rotor_admin
MYSQL_PREFERRED_PORT=13306

_my_err() { printf 'mariadb: %s\n' "$*" >&2; }
_my_info() { printf 'mariadb: %s\n' "$*" >&2; }

# Directory of the instance for this checkout (same hash as dev/lib/postgres.sh).
_my_state_dir() {
  local hash
  hash=$(printf '%s' "$REPO" | sha256sum | cut -c1-12)
  printf '/var/tmp/rotor-stack-%s/mariadb' "$hash"
}

# The OS user the server runs as: `mysql` when we are root, ourselves otherwise.
_my_owner() {
  if ((EUID == 0)); then printf mysql; else id -un; fi
}

_my_as_owner() {
  if ((EUID == 0)); then
    runuser -u mysql -- "$@"
  else
    "$@"
  fi
}

# Installs the Debian package when the server binaries are missing.
_my_ensure_installed() {
  if command -v mariadbd >/dev/null && command -v mariadb-install-db >/dev/null &&
    command -v mariadb >/dev/null; then
    return 0
  fi
  _my_info "mariadbd / mariadb-install-db not found; installing the Debian package mariadb-server"
  (stack_apt_install mariadb-server mariadb-client) || {
    _my_err "installing mariadb-server failed (see the apt output above); install it by hand: apt-get install mariadb-server"
    return 1
  }
  command -v mariadbd >/dev/null || {
    _my_err "mariadb-server is installed but mariadbd is not on PATH ($PATH)"
    return 1
  }
}

# Root over the instance's own socket (unix_socket authentication).
_my_root_sql() {
  local state=$1
  shift
  mariadb --no-defaults --protocol=socket --socket="$state/run/mariadb.sock" \
    -u "$(_my_socket_user)" --batch --skip-column-names "$@"
}

# The account unix_socket authentication maps us to.
_my_socket_user() {
  if ((EUID == 0)); then printf root; else id -un; fi
}

# The admin over TCP with TLS, verifying the certificate against the test CA.
_my_admin_sql() {
  local state=$1
  shift
  mariadb --defaults-file="$state/admin.cnf" --protocol=tcp \
    --ssl --ssl-ca="$state/tls/ca.crt" --ssl-verify-server-cert \
    --connect-timeout=5 --batch --skip-column-names "$@"
}

# Self-signed CA and a server certificate for 127.0.0.1 / localhost (created once).
_my_make_tls() {
  local tls=$1 owner=$2
  if [[ ! -s $tls/server.key || ! -s $tls/server.crt || ! -s $tls/ca.crt ]]; then
    command -v openssl >/dev/null || {
      _my_err "openssl is needed to create the test instance's TLS certificate: apt-get install openssl"
      return 1
    }
    mkdir -p "$tls"
    (
      set -e
      cd "$tls"
      openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
        -subj "/CN=rotor test MariaDB CA" -keyout ca.key -out ca.crt \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
      openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -subj "/CN=localhost" -keyout server.key -out server.csr
      printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' >server.ext
      openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
        -extfile server.ext -out server.crt
      rm -f server.csr server.ext ca.srl
    ) >"$tls/openssl.log" 2>&1 || {
      _my_err "creating the TLS certificate failed; see $tls/openssl.log"
      return 1
    }
  fi
  chown "$owner:" "$tls" "$tls/server.key" "$tls/server.crt" "$tls/ca.crt"
  chmod 0755 "$tls"
  chmod 0600 "$tls/ca.key" "$tls/server.key"
  chmod 0644 "$tls/ca.crt" "$tls/server.crt"
}

# Writes the admin's client option file (0600) from the password file.
_my_write_admin_cnf() {
  local state=$1 port=$2 password
  password=$(<"$state/admin-password")
  (
    umask 077
    printf '[client]\nuser=%s\npassword=%s\nhost=127.0.0.1\nport=%s\n' \
      "$MYSQL_ADMIN_USER" "$password" "$port" >"$state/admin.cnf.tmp"
  )
  mv -f "$state/admin.cnf.tmp" "$state/admin.cnf"
}

# True when something accepts TCP connections on 127.0.0.1:$1.
_my_port_listening() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# True when the server process recorded for this instance is running.
_my_running() {
  local state=$1
  stack_pid_alive "$state/mariadbd.pid" mariadbd || stack_pid_alive "$state/run/mariadbd.pid" mariadbd
}

_my_running_pidfile() {
  local state=$1
  if stack_pid_alive "$state/mariadbd.pid" mariadbd; then
    printf '%s' "$state/mariadbd.pid"
  else
    printf '%s' "$state/run/mariadbd.pid"
  fi
}

# Port the running server listens on (from the server itself, over the socket).
_my_running_port() {
  _my_root_sql "$1" -e 'SELECT @@port' 2>/dev/null
}

# 0 when the freshly started server answers on its socket, 2 when its process is gone.
# (Only `kill -0` here: right after the start the pid may still show the forking shell's
# command line, which stack_pid_alive's word check would take for a dead server.)
_my_ready() {
  local state=$1 pid
  pid=$(cat "$state/mariadbd.pid" 2>/dev/null || true)
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 2
  _my_root_sql "$state" -e 'SELECT 1' >/dev/null 2>&1
}

# Creates or refreshes the admin accounts (password from the file), drops anonymous
# accounts. The SQL goes through stdin so the password never shows in `ps`.
_my_provision() {
  local state=$1 password lit
  password=$(<"$state/admin-password")
  # The password is hex, but quote it properly anyway.
  lit="'${password//\'/\'\'}'"
  local out
  if ! out=$(
    _my_root_sql "$state" 2>&1 <<SQL
CREATE USER IF NOT EXISTS '$MYSQL_ADMIN_USER'@'127.0.0.1' IDENTIFIED BY $lit;
CREATE USER IF NOT EXISTS '$MYSQL_ADMIN_USER'@'localhost' IDENTIFIED BY $lit;
ALTER USER '$MYSQL_ADMIN_USER'@'127.0.0.1' IDENTIFIED BY $lit;
ALTER USER '$MYSQL_ADMIN_USER'@'localhost' IDENTIFIED BY $lit;
GRANT ALL PRIVILEGES ON *.* TO '$MYSQL_ADMIN_USER'@'127.0.0.1' WITH GRANT OPTION;
GRANT ALL PRIVILEGES ON *.* TO '$MYSQL_ADMIN_USER'@'localhost' WITH GRANT OPTION;
SQL
  ); then
    _my_err "creating the admin account as root over $state/run/mariadb.sock failed: ${out//$password/<redacted>}"
    return 1
  fi
  local anon
  anon=$(_my_root_sql "$state" -e "SELECT CONCAT(QUOTE(User), '@', QUOTE(Host)) FROM mysql.user WHERE User = ''" 2>&1) || {
    _my_err "listing anonymous accounts failed: $anon"
    return 1
  }
  if [[ -n $anon ]]; then
    local drop
    drop=$(printf '%s\n' "$anon" | paste -sd, -)
    _my_root_sql "$state" -e "DROP USER $drop" >/dev/null || {
      _my_err "dropping the anonymous accounts ($drop) failed"
      return 1
    }
  fi
}

# Proves the setup: the admin logs in over TCP with a verified TLS certificate, and a
# wrong password is refused.
_my_check_admin() {
  local state=$1 port=$2 out
  out=$(_my_admin_sql "$state" -e "SHOW SESSION STATUS LIKE 'Ssl_version'" 2>&1) || {
    printf '%s' "$out"
    return 1
  }
  if [[ $out != Ssl_version*TLS* ]]; then
    printf 'the admin connection to 127.0.0.1:%s is not encrypted (Ssl_version: %s)' "$port" "$out"
    return 1
  fi
  if mariadb --no-defaults --protocol=tcp -h 127.0.0.1 -P "$port" -u "$MYSQL_ADMIN_USER" \
    --password="wrong-password-$RANDOM" --connect-timeout=5 -e 'SELECT 1' >/dev/null 2>&1; then
    printf '127.0.0.1:%s accepted a wrong admin password' "$port"
    return 1
  fi
}

mariadb_up() {
  _my_ensure_installed || return 1
  local state owner data run tls log port
  state=$(_my_state_dir)
  owner=$(_my_owner)
  data=$state/data run=$state/run tls=$state/tls log=$state/mariadb.log

  mkdir -p "$state" "$run" || {
    _my_err "cannot create $state"
    return 1
  }
  # The parent (shared with dev/lib/postgres.sh) and this directory must be traversable
  # by the server user; the secrets in here are 0600 and owned by us.
  chmod 0755 "$(dirname "$state")"
  chmod 0711 "$state"
  chown "$owner:" "$run" && chmod 0700 "$run" || {
    _my_err "cannot hand $run to $owner"
    return 1
  }
  _my_make_tls "$tls" "$owner" || return 1
  if [[ ! -s $state/admin-password ]]; then
    (umask 077 && stack_random_hex 24 >"$state/admin-password")
  fi
  chmod 0600 "$state/admin-password"

  # Fast path: a healthy instance is reused as it is.
  if _my_running "$state"; then
    port=$(_my_running_port "$state") || port=""
    if [[ -n $port ]]; then
      _my_write_admin_cnf "$state" "$port"
      if _my_check_admin "$state" "$port" >/dev/null 2>&1; then
        _my_record "$state" "$port"
        _my_info "reusing the running instance on 127.0.0.1:$port"
        return 0
      fi
      # Running, but the admin cannot log in (password file replaced, accounts changed):
      # repair over the root socket below.
      _my_info "instance on 127.0.0.1:$port is running but the admin check failed; re-creating the admin account"
    else
      _my_err "mariadbd (pid $(cat "$(_my_running_pidfile "$state")")) runs but does not answer on $run/mariadb.sock; stop it with dev/stack down, see $log"
      return 1
    fi
  else
    if [[ ! -d $data/mysql ]]; then
      # Absent, or a leftover of a failed install: create it.
      rm -rf "$data"
      mkdir -p "$data" && chown "$owner:" "$data" && chmod 0700 "$data"
      _my_info "creating the instance in $data"
      if ! _my_as_owner mariadb-install-db --no-defaults --datadir="$data" --user="$owner" \
        --auth-root-authentication-method=socket --skip-test-db --skip-name-resolve \
        >"$state/install.log" 2>&1; then
        _my_err "mariadb-install-db failed; see $state/install.log"
        return 1
      fi
    fi
    # Same port as last time when it is free, else the preferred one, else any free one.
    # "Free" means nothing listens there: mariadbd binds with SO_REUSEADDR, so a port
    # still in TIME_WAIT from our own last run is fine (a plain bind test would refuse it).
    local last candidate
    last=$(cat "$state/port" 2>/dev/null || true)
    port=""
    for candidate in "$last" "$MYSQL_PREFERRED_PORT"; do
      if [[ $candidate =~ ^[0-9]+$ ]] && ! _my_port_listening "$candidate"; then
        port=$candidate
        break
      fi
    done
    if [[ -z $port ]]; then
      port=$(stack_free_port "$MYSQL_PREFERRED_PORT") || {
        _my_err "no free loopback port found"
        return 1
      }
    fi
    printf '%s\n' "$port" >"$state/port"
    local user_opt=()
    if ((EUID == 0)); then user_opt=(--user=mysql); fi
    rm -f "$run/mariadb.sock" "$run/mariadbd.pid"
    _my_info "starting mariadbd on 127.0.0.1:$port (log $log)"
    # --no-defaults first: the machine's /etc/mysql belongs to its shared server.
    stack_start_daemon "$state/mariadbd.pid" "$log" \
      mariadbd --no-defaults "${user_opt[@]}" --datadir="$data" \
      --socket="$run/mariadb.sock" --pid-file="$run/mariadbd.pid" \
      --bind-address=127.0.0.1 --port="$port" --skip-name-resolve \
      --ssl-ca="$tls/ca.crt" --ssl-cert="$tls/server.crt" --ssl-key="$tls/server.key" \
      --max-connections=500 --max-connect-errors=1000000 \
      --innodb-buffer-pool-size=64M --character-set-server=utf8mb4
    local deadline=$((SECONDS + 60)) rc
    while :; do
      rc=0
      _my_ready "$state" || rc=$?
      ((rc == 0)) && break
      if ((rc == 2)); then
        _my_err "mariadbd exited during start-up; see $log. Last lines:"
        tail -n 15 "$log" >&2 || true
        return 1
      fi
      if ((SECONDS >= deadline)); then
        _my_err "mariadbd did not answer on $run/mariadb.sock within 60 s; see $log"
        return 1
      fi
      sleep 0.2
    done
  fi

  _my_provision "$state" || return 1
  port=$(_my_running_port "$state") || {
    _my_err "cannot read @@port from the running instance; see $log"
    return 1
  }
  _my_write_admin_cnf "$state" "$port"
  local problem
  if ! problem=$(_my_check_admin "$state" "$port" 2>&1); then
    _my_err "admin check on 127.0.0.1:$port failed: $problem; see $log"
    return 1
  fi
  _my_record "$state" "$port"
  _my_info "ready on 127.0.0.1:$port (admin $MYSQL_ADMIN_USER, TLS CA $tls/ca.crt, log $log)"
}

_my_record() {
  local state=$1 port=$2
  stack_env_set ROTOR_TEST_MYSQL_HOST 127.0.0.1
  stack_env_set ROTOR_TEST_MYSQL_PORT "$port"
  stack_env_set ROTOR_TEST_MYSQL_ADMIN_USER "$MYSQL_ADMIN_USER"
  stack_env_set ROTOR_TEST_MYSQL_ADMIN_PASSWORD "$(<"$state/admin-password")"
  stack_env_set ROTOR_TEST_MYSQL_CA_FILE "$state/tls/ca.crt"
}

mariadb_down() {
  local state pidfile
  state=$(_my_state_dir)
  if ! _my_running "$state"; then
    _my_info "no running instance for $state"
    rm -f "$state/mariadbd.pid"
    return 0
  fi
  pidfile=$(_my_running_pidfile "$state")
  # TERM makes mariadbd shut down cleanly; stack_stop_pidfile escalates after 15 s.
  stack_stop_pidfile "$pidfile" mariadbd
  rm -f "$state/mariadbd.pid"
  _my_info "stopped the instance in $state/data (data kept)"
}

mariadb_status() {
  local state port
  state=$(_my_state_dir)
  if ! _my_running "$state"; then
    echo "mariadb:    stopped"
    return 0
  fi
  port=$(cat "$state/port" 2>/dev/null || echo '?')
  if [[ -f $state/admin.cnf ]] && _my_admin_sql "$state" -e 'SELECT 1' >/dev/null 2>&1; then
    echo "mariadb:    accepting connections (127.0.0.1:$port)"
  else
    echo "mariadb:    running but the admin cannot log in (127.0.0.1:$port); run dev/stack up"
  fi
}
