# shellcheck shell=bash
# The fake Kubernetes API server (testkit's `fake-kube-apiserver`) for demos and manual
# runs; tests start their own in-process instance (rotor_testkit::FakeKube). Sourced by
# dev/stack after dev/lib/common.sh.
#
#   kube_up      reuse a healthy server, else build and start one on a free loopback port;
#                writes $STACK_DIR/kubeconfig and exports KUBECONFIG into $STACK_ENV.
#                ROTOR_KUBE_SEED=FILE seeds it with objects (YAML/JSON) at start.
#   kube_down    stop it
#   kube_status  one line about it

KUBE_PID="$STACK_DIR/kube.pid"
KUBE_LOG="$STACK_DIR/kube.log"
KUBE_BUILD_LOG="$STACK_DIR/kube-build.log"
KUBE_ADDR_FILE="$STACK_DIR/kube.addr"
KUBE_CONFIG="$STACK_DIR/kubeconfig"
# "started" or "reused" after a successful up; dev/stack prints it.
KUBE_STATE=""
export KUBE_STATE

kube_healthy() {
  local addr
  [[ -f "$KUBE_ADDR_FILE" ]] && [[ -f "$KUBE_CONFIG" ]] || return 1
  addr=$(<"$KUBE_ADDR_FILE")
  [[ $(kube_readyz_status "$addr") == 200 ]]
}

# Prints the HTTP status of https://ADDR/readyz (000 if unreachable), verifying the
# server with the CA in the kubeconfig it wrote (the server makes a new CA every run).
kube_readyz_status() {
  python3 - "$1" "$KUBE_CONFIG" <<'PY'
import base64, json, ssl, sys, urllib.error, urllib.request
addr, kubeconfig = sys.argv[1], sys.argv[2]
try:
    with open(kubeconfig) as f:
        cluster = json.load(f)["clusters"][0]["cluster"]
    ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
    context = ssl.create_default_context(cadata=ca)
    with urllib.request.urlopen(f"https://{addr}/readyz", timeout=3, context=context) as resp:
        print(resp.status)
except urllib.error.HTTPError as e:
    print(e.code)
except Exception:
    print("000")
PY
}

# Prints the path of the built binary.
kube_build() {
  stack_log "building fake-kube-apiserver (the first build takes a few minutes; log: $KUBE_BUILD_LOG)"
  if ! (cd "$REPO" && cargo build -p rotor-testkit --bin fake-kube-apiserver --message-format=short) \
    >"$KUBE_BUILD_LOG" 2>&1; then
    stack_log "building fake-kube-apiserver failed; last lines of $KUBE_BUILD_LOG:"
    tail -n 20 "$KUBE_BUILD_LOG" >&2
    return 1
  fi
  local target
  target=$(cd "$REPO" && cargo metadata --format-version 1 --no-deps 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])') ||
    target="$REPO/target"
  printf '%s\n' "$target/debug/fake-kube-apiserver"
}

kube_up() {
  if stack_pid_alive "$KUBE_PID" fake-kube-apiserver && kube_healthy; then
    KUBE_STATE="reused"
    stack_env_set KUBECONFIG "$KUBE_CONFIG"
    return 0
  fi
  stack_stop_pidfile "$KUBE_PID" fake-kube-apiserver
  rm -f "$KUBE_ADDR_FILE" "$KUBE_CONFIG"

  local bin
  bin=$(kube_build) || return 1
  local args=(--listen 127.0.0.1:0 --kubeconfig "$KUBE_CONFIG")
  if [[ -n "${ROTOR_KUBE_SEED:-}" ]]; then
    [[ -f "$ROTOR_KUBE_SEED" ]] || { stack_log "ROTOR_KUBE_SEED=$ROTOR_KUBE_SEED is not a file"; return 1; }
    args+=(--seed "$ROTOR_KUBE_SEED")
  fi
  stack_start_daemon "$KUBE_PID" "$KUBE_LOG" "$bin" "${args[@]}"

  local deadline=$((SECONDS + 60)) addr=""
  while :; do
    addr=$(sed -n 's/^listening on //p' "$KUBE_LOG" | head -n 1)
    [[ -n $addr ]] && break
    if ! stack_pid_alive "$KUBE_PID"; then
      stack_log "fake-kube-apiserver exited during start-up; last lines of $KUBE_LOG:"
      tail -n 15 "$KUBE_LOG" >&2
      return 1
    fi
    if ((SECONDS >= deadline)); then
      stack_log "fake-kube-apiserver did not report its address within 60 s; read $KUBE_LOG"
      return 1
    fi
    sleep 0.2
  done
  printf '%s\n' "$addr" >"$KUBE_ADDR_FILE"
  if ! stack_wait_until 30 "fake-kube-apiserver /readyz" kube_healthy; then
    stack_log "fake-kube-apiserver is not ready; read $KUBE_LOG"
    return 1
  fi
  stack_env_set KUBECONFIG "$KUBE_CONFIG"
  KUBE_STATE="started"
}

kube_down() {
  if stack_pid_alive "$KUBE_PID" fake-kube-apiserver; then
    stack_log "stopping fake-kube-apiserver (pid $(<"$KUBE_PID"))"
  fi
  stack_stop_pidfile "$KUBE_PID" fake-kube-apiserver
  rm -f "$KUBE_ADDR_FILE" "$KUBE_CONFIG"
  stack_env_unset KUBECONFIG
}

kube_status() {
  if ! stack_pid_alive "$KUBE_PID" fake-kube-apiserver; then
    echo "kube:       stopped"
  elif kube_healthy; then
    echo "kube:       running (pid $(<"$KUBE_PID"), https://$(<"$KUBE_ADDR_FILE"), KUBECONFIG=$KUBE_CONFIG)"
  else
    echo "kube:       unhealthy (pid $(<"$KUBE_PID"); log: $KUBE_LOG)"
  fi
}
