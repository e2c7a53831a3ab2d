#!/usr/bin/env bash
# RunPod pod startup for the strata serving appliance: sshd and ttyd when available, then `strata serve` on PORT.
#
# Environment (all optional except a model at MODEL_PATH, or a RELEASE):
#   MODEL_PATH      base GGUF to serve (default $WORKSPACE/models/${MODEL_NAME:-strata}.Q4_K_M.gguf;
#                   a relative path is taken relative to WORKSPACE)
#   RELEASE         NAME[@TAG|@VERSION] of a published release to serve instead of MODEL_PATH: pulled
#                   (sha256-verified) from STRATA_STORE into $WORKSPACE/releases/NAME/VERSION/ if needed
#   STRATA_STORE    release store: a folder or s3://bucket/prefix (AWS_ENDPOINT_URL, AWS_* credentials)
#   LORA_PATHS      comma-separated adapter dirs or GGUF files, each optionally `path:scale`; with RELEASE
#                   also the release's adapter names (e.g. ASC_Leases:0.5)
#   PORT (5000) HOST (0.0.0.0) N_CTX N_THREADS CHAT_FORMAT API_KEY FLASH_ATTN
#   PUBLIC_KEY      an SSH public key: starts sshd when it is installed
#   TTYD_PORT       web terminal port (default 7681) when ttyd is installed
#   HEALTH_TIMEOUT  seconds to wait for /health (default 600); STOP_TIMEOUT seconds before SIGKILL (default 30)
#   STRATA_BIN      the strata command (default `strata`)
# Extra arguments are passed on to `strata serve`.
set -euo pipefail

export WORKSPACE="${WORKSPACE:-/workspace}"  # strata serve allows adapters under it
PORT="${PORT:-5000}"
HOST="${HOST:-0.0.0.0}"
TTYD_PORT="${TTYD_PORT:-7681}"
HEALTH_TIMEOUT="${HEALTH_TIMEOUT:-600}"
STOP_TIMEOUT="${STOP_TIMEOUT:-30}"
STRATA_BIN="${STRATA_BIN:-strata}"

children=()   # sshd, ttyd: stopped with the server
server_pid=""
watchdog_pid=""
stopping=""

log() { printf '[start.sh] %s\n' "$*"; }
die() { printf '[start.sh] error: %s\n' "$*" >&2; exit 1; }

resolve_model() {
  local path="${MODEL_PATH:-models/${MODEL_NAME:-strata}.Q4_K_M.gguf}"
  case "$path" in
    /*) printf '%s\n' "$path" ;;
    *) printf '%s/%s\n' "${WORKSPACE%/}" "$path" ;;
  esac
}

check_model() {
  local model="$1"
  if [ -f "$model" ]; then
    return 0
  fi
  cat >&2 <<EOF
[start.sh] error: no model to serve: MODEL_PATH=${MODEL_PATH:-<unset>} -> $model does not exist.
[start.sh] Set MODEL_PATH to the base GGUF (for example -e MODEL_PATH=/workspace/models/mistral-7b-instruct-v0.2.Q4_K_M.gguf),
[start.sh] or put the GGUF at $model. The build stage writes it to MODEL_PATH
[start.sh] (default \$WORKSPACE/models/<MODEL_NAME>.Q4_K_M.gguf): run \`strata build train_all\`
[start.sh] (or \`strata build convert\`) in the GPU image with the same /workspace volume.
EOF
  exit 1
}

start_sshd() {
  local sshd
  sshd="$(command -v sshd || true)"
  if [ -z "$sshd" ] && [ -x /usr/sbin/sshd ]; then
    sshd=/usr/sbin/sshd
  fi
  if [ -z "$sshd" ]; then
    log "sshd is not installed; skipping SSH."
    return 0
  fi
  if [ -z "${PUBLIC_KEY:-}" ]; then
    log "PUBLIC_KEY is not set; skipping SSH (set it to your public key to log in as $(id -un))."
    return 0
  fi
  local dir="${HOME:-/root}/.ssh"
  mkdir -p "$dir"
  chmod 700 "$dir"
  touch "$dir/authorized_keys"
  if ! grep -qxF -- "$PUBLIC_KEY" "$dir/authorized_keys"; then
    printf '%s\n' "$PUBLIC_KEY" >> "$dir/authorized_keys"
  fi
  chmod 600 "$dir/authorized_keys"
  if command -v ssh-keygen >/dev/null; then
    ssh-keygen -A >/dev/null
  fi
  mkdir -p /run/sshd
  "$sshd" -D -e &
  children+=("$!")
  log "sshd started (pid $!) with the key from PUBLIC_KEY."
}

start_ttyd() {
  if ! command -v ttyd >/dev/null; then
    log "ttyd is not installed; skipping the web terminal."
    return 0
  fi
  ttyd -p "$TTYD_PORT" -W bash &
  children+=("$!")
  log "ttyd started on port $TTYD_PORT (pid $!)."
}

# LORA_PATHS="a,b:0.5" -> --lora a --lora-scaled b 0.5
lora_args() {
  local entry path scale
  local -a entries
  IFS=',' read -ra entries <<< "${LORA_PATHS:-}"
  for entry in "${entries[@]}"; do
    entry="${entry#"${entry%%[![:space:]]*}"}"
    entry="${entry%"${entry##*[![:space:]]}"}"
    [ -n "$entry" ] || continue
    path="$entry"
    scale=""
    if [[ "$entry" =~ ^(.+):([0-9]*\.?[0-9]+)$ ]]; then
      path="${BASH_REMATCH[1]}"
      scale="${BASH_REMATCH[2]}"
    fi
    [ -e "$path" ] || [ -n "${RELEASE:-}" ] || die "LORA_PATHS entry '$entry': $path does not exist; list adapter dirs (holding adapter.gguf) or GGUF files, comma-separated, each optionally path:scale."
    if [ -n "$scale" ]; then
      serve_args+=(--lora-scaled "$path" "$scale")
    else
      serve_args+=(--lora "$path")
    fi
  done
}

probe() {
  local url="$1"
  if command -v curl >/dev/null; then
    curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null
  else
    python3 - "$url" <<'EOF' 2>/dev/null
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=2)
EOF
  fi
}

wait_healthy() {
  local host="$HOST" url waited=0
  case "$host" in 0.0.0.0 | "::" | "") host=127.0.0.1 ;; esac
  [[ "$host" == *:* ]] && host="[$host]"
  url="http://$host:$PORT/health"
  if ! command -v curl >/dev/null && ! command -v python3 >/dev/null; then
    log "neither curl nor python3 is installed; not waiting for $url."
    return 0
  fi
  log "waiting up to ${HEALTH_TIMEOUT}s for $url ..."
  while kill -0 "$server_pid" 2>/dev/null; do
    if probe "$url"; then
      log "strata serve is ready on http://$HOST:$PORT (after ${waited}s)."
      return 0
    fi
    if [ "$waited" -ge "$HEALTH_TIMEOUT" ]; then
      log "warning: $url not healthy after ${HEALTH_TIMEOUT}s; leaving the server running (see its log above)."
      return 0
    fi
    sleep 1
    waited=$((waited + 1))
  done
}

# shellcheck disable=SC2329  # invoked by the traps in main
# On SIGTERM/SIGINT: ask every child to stop (SIGTERM), SIGKILL whatever is left after STOP_TIMEOUT.
shutdown() {
  log "received $1; stopping strata serve${children[*]:+ and the other services}."
  trap '' TERM INT
  stopping="$1"
  local pid
  for pid in "$server_pid" "${children[@]}"; do
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true
  done
  if [ -z "$server_pid" ]; then  # stopped before the server was launched
    exit 0
  fi
  ( sleep "$STOP_TIMEOUT"; kill -KILL "$server_pid" "${children[@]}" ) >/dev/null 2>&1 &
  watchdog_pid=$!
}

main() {
  local model pid rc status=0
  if [ -n "${RELEASE:-}" ]; then  # strata serve pulls it (if needed) and says what to fix when it cannot
    serve_args=(serve --release "$RELEASE" --host "$HOST" --port "$PORT")
    log "serving release $RELEASE from ${STRATA_STORE:-the copy under $WORKSPACE/releases (STRATA_STORE unset)}."
  else
    model="$(resolve_model)"
    check_model "$model"
    serve_args=(serve --model "$model" --host "$HOST" --port "$PORT")
  fi
  trap 'shutdown SIGTERM' TERM
  trap 'shutdown SIGINT' INT
  start_sshd
  start_ttyd
  lora_args
  [ -z "${N_CTX:-}" ] || serve_args+=(--n_ctx "$N_CTX")
  [ -z "${N_THREADS:-}" ] || serve_args+=(--n_threads "$N_THREADS")
  [ -z "${CHAT_FORMAT:-}" ] || serve_args+=(--chat_format "$CHAT_FORMAT")
  [ -z "${FLASH_ATTN:-}" ] || serve_args+=(--flash_attn "$FLASH_ATTN")
  serve_args+=("$@")
  command -v "$STRATA_BIN" >/dev/null || die "STRATA_BIN=$STRATA_BIN is not an executable; install strata[serve] or point STRATA_BIN at the strata command."
  # API_KEY reaches the server through its environment (strata serve reads it), so it never shows in `ps`.
  log "starting: $STRATA_BIN ${serve_args[*]}${API_KEY:+ (API_KEY set: requests need Authorization: Bearer)}"
  "$STRATA_BIN" "${serve_args[@]}" &
  server_pid=$!
  wait_healthy
  # `wait` returns early (status > 128) when a trapped signal arrives; wait again until the server is gone.
  while :; do
    status=0
    wait "$server_pid" || status=$?
    kill -0 "$server_pid" 2>/dev/null || break
  done
  if [ "$status" -gt 128 ]; then  # the server may have exited while a trap ran: fetch its own status
    rc=0
    wait "$server_pid" 2>/dev/null || rc=$?
    [ "$rc" -eq 127 ] || status=$rc
  fi
  [ -z "$watchdog_pid" ] || kill "$watchdog_pid" 2>/dev/null || true
  for pid in "${children[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  # uvicorn re-raises the SIGTERM we forwarded after its graceful shutdown: that is a clean, requested stop.
  if [ -n "$stopping" ] && [ "$status" -eq 143 ]; then
    log "strata serve stopped cleanly on $stopping."
    exit 0
  fi
  log "strata serve exited with status $status."
  exit "$status"
}

serve_args=()
main "$@"
