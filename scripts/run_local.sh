#!/usr/bin/env bash
# Run the API and one worker in the foreground; Ctrl-C (or SIGTERM) stops both gracefully and
# exits 0. WITH_LOCAL_LLM=1 also serves a small real model (llama.cpp, OpenAI-compatible) and
# registers it, so a machine without Ollama or Docker still gets real answers. Once everything
# answers, scripts/ready_banner.py prints where it is (API, docs, worker metrics, model id).
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
API_HOST=${API_HOST:-0.0.0.0}
API_PORT=${API_PORT:-8000}
run_dir=$(mktemp -d "${TMPDIR:-/tmp}/ai-eng-run.XXXXXX")
pids=()
banner_pid=
stop() {
  trap - INT TERM
  [ -n "$banner_pid" ] && kill -TERM "$banner_pid" 2>/dev/null
  kill -TERM "${pids[@]}" 2>/dev/null
  wait "${pids[@]}" 2>/dev/null
  wait 2>/dev/null # the worker's log copy ends with the worker's output
  rm -rf "$run_dir"
}
# A signal is how a run is meant to end: exit 0, so `make` reports no error.
trap 'echo; echo "stopping..."; stop; exit 0' INT TERM

llm_args=()
if [ "${WITH_LOCAL_LLM:-0}" = "1" ]; then
  LOCAL_LLM_PORT=${LOCAL_LLM_PORT:-8080}
  export OPENAI_BASE_URL="http://127.0.0.1:${LOCAL_LLM_PORT}"
  "$BIN/python" scripts/local_llm.py fetch || { rm -rf "$run_dir"; exit 1; }
  "$BIN/python" scripts/local_llm.py serve --port "$LOCAL_LLM_PORT" &
  pids+=("$!")
  llm_args=(--local-llm "$OPENAI_BASE_URL")
fi
# The worker's output also goes to a file the banner reads its metrics port from; the copy
# ignores Ctrl-C and ends when the worker has written its last line.
"$BIN/python" -m worker > >(trap '' INT TERM; exec tee "$run_dir/worker.log") 2>&1 &
pids+=("$!")
"$BIN/python" -m uvicorn --factory api.main:create_app \
  --host "$API_HOST" --port "$API_PORT" --no-access-log &
pids+=("$!")
"$BIN/python" -m scripts.ready_banner --api "http://127.0.0.1:${API_PORT}" \
  --worker-log "$run_dir/worker.log" "${llm_args[@]}" &
banner_pid=$!
# Any service ending ends the run: a half-running service is worse than a stopped one.
wait -n "${pids[@]}"
code=$?
echo "a process of the run ended (exit code $code): stopping the others" >&2
stop
exit "$code"
