#!/usr/bin/env bash
# Run the API and one worker in the foreground; Ctrl-C (or SIGTERM) stops both gracefully.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
pids=()
stop() {
  trap - INT TERM EXIT
  kill -TERM "${pids[@]}" 2>/dev/null
  wait "${pids[@]}" 2>/dev/null
}
trap stop INT TERM EXIT
"$BIN/python" -m worker &
pids+=("$!")
"$BIN/python" -m uvicorn --factory api.main:create_app \
  --host "${API_HOST:-0.0.0.0}" --port "${API_PORT:-8000}" --no-access-log &
pids+=("$!")
# Either process ending ends the run: a half-running service is worse than a stopped one.
wait -n
