# shellcheck shell=bash
# PostgreSQL for the local test stack: a project-owned cluster, never the machine's
# shared server (whose pg_hba may say `trust` and accept any password).
#
# Sourced by dev/stack. Defines:
#   postgres_up    create / start / reuse the cluster, export and record ROTOR_TEST_PG_*
#   postgres_down  stop the cluster (its data and admin password are kept for the next up)
#
# Layout (postgres must be able to traverse to it, so it lives outside the repo):
#   /var/tmp/rotor-stack-<hash of repo path>/pg/
#     data/            PGDATA (initdb --auth=scram-sha-256, pg_hba: scram only, no trust)
#     sock/            unix socket directory
#     admin-password   0600, random per cluster, reused while the cluster exists
#     port             the port the cluster last ran on
#     tls/             self-signed CA + server certificate (ssl=on; ROTOR_TEST_PG_CA_FILE)
#     postgres.log     server log (pg_ctl -l)

: "${REPO:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
: "${STACK_DIR:=$REPO/.stack}"

# Fallback until dev/lib/common.sh provides it: record `export KEY='VALUE'` in the env file.
declare -F stack_env_set >/dev/null || stack_env_set() {
	local key=$1 value=$2
	mkdir -p "$STACK_DIR"
	touch "$STACK_DIR/env"
	# Drop an earlier line for the same key so the file stays one line per key.
	sed -i "/^export ${key}=/d" "$STACK_DIR/env"
	printf "export %s='%s'\n" "$key" "${value//\'/\'\\\'\'}" >>"$STACK_DIR/env"
}

PG_ADMIN_USER=rotor_admin
PG_PREFERRED_PORT=15432

_pg_err() { printf 'postgres: %s\n' "$*" >&2; }
_pg_info() { printf 'postgres: %s\n' "$*" >&2; }

# Directory of the cluster for this checkout.
_pg_state_dir() {
	local hash
	hash=$(printf '%s' "$REPO" | sha256sum | cut -c1-12)
	printf '/var/tmp/rotor-stack-%s/pg' "$hash"
}

# Newest Debian PostgreSQL bin directory; installs the package when none is there.
_pg_bindir() {
	local dir
	dir=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -type d -name bin 2>/dev/null | sort -V | tail -n 1)
	if [[ -z $dir || ! -x $dir/initdb ]]; then
		_pg_info "no PostgreSQL server binaries under /usr/lib/postgresql; installing the Debian package"
		local sudo=()
		((EUID == 0)) || sudo=(sudo)
		# A fresh machine has no package lists yet: update once before installing.
		"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || true
		if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql >&2; then
			_pg_err "apt-get install -y postgresql failed"
			return 1
		fi
		dir=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -type d -name bin 2>/dev/null | sort -V | tail -n 1)
		if [[ -z $dir || ! -x $dir/initdb ]]; then
			_pg_err "postgresql installed but no initdb under /usr/lib/postgresql/*/bin"
			return 1
		fi
	fi
	printf '%s' "$dir"
}

# Runs a command as the cluster owner: `postgres` when we are root (initdb refuses
# root), ourselves otherwise.
_pg_as_owner() {
	if ((EUID == 0)); then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

_pg_owner() {
	if ((EUID == 0)); then printf postgres; else id -un; fi
}

# True when something accepts TCP connections on 127.0.0.1:$1.
_pg_port_busy() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# The first free loopback port among the arguments, then 15433-15532.
_pg_free_port() {
	local port
	for port in "$@" $(seq 15433 15532); do
		[[ -n $port ]] || continue
		if ! _pg_port_busy "$port"; then
			printf '%s' "$port"
			return 0
		fi
	done
	_pg_err "no free loopback port in 15432-15532"
	return 1
}

# Self-signed CA and a server certificate for 127.0.0.1 / localhost (created once).
_pg_make_tls() {
	local tls=$1
	[[ -s $tls/server.key && -s $tls/server.crt && -s $tls/ca.crt ]] && return 0
	command -v openssl >/dev/null || {
		_pg_err "openssl is needed to create the test cluster's TLS certificate"
		return 1
	}
	mkdir -p "$tls"
	(
		set -e
		cd "$tls"
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
			-subj "/CN=rotor test CA" -keyout ca.key -out ca.crt \
			-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
		openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
			-subj "/CN=localhost" -keyout server.key -out server.csr
		printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' >server.ext
		openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
			-extfile server.ext -out server.crt
		rm -f server.csr server.ext ca.srl
		chmod 0600 ca.key server.key
		chmod 0644 ca.crt server.crt
	) >"$tls/openssl.log" 2>&1 || {
		_pg_err "creating the TLS certificate failed; see $tls/openssl.log"
		return 1
	}
}

# Writes pg_hba.conf: SCRAM on loopback TCP and the local socket, nothing else, no trust.
_pg_write_hba() {
	cat >"$1/pg_hba.conf" <<-'EOF'
		# Written by dev/lib/postgres.sh: SCRAM only, no trust anywhere.
		local all all               scram-sha-256
		host  all all 127.0.0.1/32  scram-sha-256
	EOF
}

postgres_up() {
	local bin state data sock log pwfile portfile tls port owner
	bin=$(_pg_bindir) || return 1
	state=$(_pg_state_dir)
	data=$state/data sock=$state/sock log=$state/postgres.log
	pwfile=$state/admin-password portfile=$state/port tls=$state/tls
	owner=$(_pg_owner)

	# The parent must be traversable by the cluster owner; the state dir is the owner's alone.
	mkdir -p "$state" || {
		_pg_err "cannot create $state"
		return 1
	}
	chmod 0755 "$(dirname "$state")"
	chown "$owner:" "$state" && chmod 0700 "$state" || {
		_pg_err "cannot hand $state to $owner"
		return 1
	}

	local status=0
	if [[ -f $data/PG_VERSION ]]; then
		if [[ ! -s $pwfile ]]; then
			_pg_err "cluster $data exists but its admin password file $pwfile is missing; remove $state to recreate the cluster"
			return 1
		fi
		_pg_as_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1 || status=$?
	else
		# Absent (or a leftover of a failed initdb): create it.
		rm -rf "$data"
		(umask 077 && od -An -tx1 -N24 /dev/urandom | tr -d ' \n' >"$pwfile")
		chown "$owner:" "$pwfile" && chmod 0600 "$pwfile"
		_pg_info "creating cluster in $data"
		if ! _pg_as_owner "$bin/initdb" -D "$data" -U "$PG_ADMIN_USER" --pwfile="$pwfile" \
			--auth=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >"$state/initdb.log" 2>&1; then
			_pg_err "initdb failed; see $state/initdb.log"
			return 1
		fi
		status=3
	fi

	_pg_make_tls "$tls" || return 1
	chown -R "$owner:" "$tls"
	_pg_write_hba "$data"
	chown "$owner:" "$data/pg_hba.conf" && chmod 0600 "$data/pg_hba.conf"
	mkdir -p "$sock" && chown "$owner:" "$sock"

	if ((status == 0)); then
		port=$(sed -n 4p "$data/postmaster.pid" 2>/dev/null)
		_pg_info "reusing the running cluster on port $port"
		# pg_hba may have been rewritten above; make the server read it again.
		_pg_as_owner "$bin/pg_ctl" -D "$data" reload >/dev/null 2>&1 || {
			_pg_err "pg_ctl reload failed; see $log"
			return 1
		}
	else
		# Same port as last time when it is free, else the preferred one, else any.
		port=$(_pg_free_port "$(cat "$portfile" 2>/dev/null)" "$PG_PREFERRED_PORT") || return 1
		printf '%s\n' "$port" >"$portfile"
		_pg_info "starting the cluster on 127.0.0.1:$port"
		if ! _pg_as_owner "$bin/pg_ctl" -D "$data" -l "$log" -w -t 60 \
			-o "-p $port -k $sock -c listen_addresses=127.0.0.1 -c password_encryption=scram-sha-256 -c max_connections=200 -c ssl=on -c ssl_cert_file=$tls/server.crt -c ssl_key_file=$tls/server.key -c ssl_ca_file=$tls/ca.crt" \
			start >"$state/pg_ctl.log" 2>&1; then
			_pg_err "pg_ctl start failed; see $log and $state/pg_ctl.log"
			return 1
		fi
	fi
	if [[ -z $port ]]; then
		_pg_err "cannot tell the port of the running cluster from $data/postmaster.pid; see $log"
		return 1
	fi

	# Prove the setup: the admin password works and a wrong one is refused.
	local admin_password check
	admin_password=$(cat "$pwfile")
	check=$(PGPASSWORD=$admin_password PGCONNECT_TIMEOUT=5 "$bin/psql" -X -w -At -h 127.0.0.1 -p "$port" \
		-U "$PG_ADMIN_USER" -d postgres -c 'SHOW password_encryption' 2>&1) || {
		_pg_err "admin login to 127.0.0.1:$port failed: $check; see $log"
		return 1
	}
	if [[ $check != scram-sha-256 ]]; then
		_pg_err "unexpected password_encryption '$check' on 127.0.0.1:$port"
		return 1
	fi
	if PGPASSWORD="wrong-$admin_password" PGCONNECT_TIMEOUT=5 "$bin/psql" -X -w -At -h 127.0.0.1 -p "$port" \
		-U "$PG_ADMIN_USER" -d postgres -c 'SELECT 1' >/dev/null 2>&1; then
		_pg_err "127.0.0.1:$port accepted a wrong password: pg_hba is not enforcing SCRAM; see $data/pg_hba.conf"
		return 1
	fi

	export ROTOR_TEST_PG_HOST=127.0.0.1
	export ROTOR_TEST_PG_PORT=$port
	export ROTOR_TEST_PG_ADMIN_USER=$PG_ADMIN_USER
	export ROTOR_TEST_PG_ADMIN_PASSWORD=$admin_password
	export ROTOR_TEST_PG_CA_FILE=$tls/ca.crt
	local key
	for key in ROTOR_TEST_PG_HOST ROTOR_TEST_PG_PORT ROTOR_TEST_PG_ADMIN_USER \
		ROTOR_TEST_PG_ADMIN_PASSWORD ROTOR_TEST_PG_CA_FILE; do
		stack_env_set "$key" "${!key}"
	done
	_pg_info "ready on 127.0.0.1:$port (admin $PG_ADMIN_USER, log $log)"
}

postgres_down() {
	local bin state data status=0
	state=$(_pg_state_dir)
	data=$state/data
	if [[ ! -f $data/PG_VERSION ]]; then
		_pg_info "no cluster in $data"
		return 0
	fi
	bin=$(_pg_bindir) || return 1
	_pg_as_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1 || status=$?
	if ((status != 0)); then
		_pg_info "cluster in $data is not running"
		return 0
	fi
	if ! _pg_as_owner "$bin/pg_ctl" -D "$data" -m fast -w -t 60 stop >"$state/pg_ctl.log" 2>&1; then
		_pg_err "pg_ctl stop failed; see $state/postgres.log and $state/pg_ctl.log"
		return 1
	fi
	_pg_info "stopped the cluster in $data"
}
