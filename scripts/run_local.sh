#!/usr/bin/env bash
# Run the API and one worker in the foreground; Ctrl-C (or SIGTERM) stops both gracefully.
# WITH_LOCAL_LLM=1 also serves a small real model (llama.cpp, OpenAI-compatible) and registers
# it, so a machine without Ollama or Docker still gets real answers.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
API_PORT=${API_PORT:-8000}
pids=()
stop() {
  trap - INT TERM EXIT
  kill -TERM "${pids[@]}" 2>/dev/null
  wait "${pids[@]}" 2>/dev/null
}
trap stop INT TERM EXIT
if [ "${WITH_LOCAL_LLM:-0}" = "1" ]; then
  LOCAL_LLM_PORT=${LOCAL_LLM_PORT:-8080}
  export OPENAI_BASE_URL="http://127.0.0.1:${LOCAL_LLM_PORT}"
  "$BIN/python" scripts/local_llm.py fetch || exit 1
  "$BIN/python" scripts/local_llm.py serve --port "$LOCAL_LLM_PORT" \
    --register-api "http://127.0.0.1:${API_PORT}" &
  pids+=("$!")
fi
"$BIN/python" -m worker &
pids+=("$!")
"$BIN/python" -m uvicorn --factory api.main:create_app \
  --host "${API_HOST:-0.0.0.0}" --port "$API_PORT" --no-access-log &
pids+=("$!")
# Any process ending ends the run: a half-running service is worse than a stopped one.
wait -n
