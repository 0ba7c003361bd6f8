#!/usr/bin/env bash
# Older Airflow minors: for each one (default: DEFAULT_MINORS; the main test run covers the
# newest Airflow), a fresh venv with the newest release of that minor from PyPI, this
# package installed editable with its test extra, and the Airflow-facing tests run with
# that venv's pytest: the operator and decorator in real dag.test() runs, approvals, the
# example DAGs, the trace view API under SimpleAuthManager and under FAB, and the browser
# test when Chromium and chromedriver are installed.
#
#   scripts/compat.sh            # the minors in DEFAULT_MINORS
#   scripts/compat.sh 3.1        # the ones named
#
# Airflow's official constraint files live on GitHub, which is not reachable here, so
# Airflow is installed plain from PyPI with only the bounds in bounds_for() below (newer
# releases of its dependencies that that Airflow release cannot run with), then pinned
# (a pip constraint file) while the package and its test extra are installed, so that
# nothing they require can move it to another release.
# The venvs live under $CODEAGENT_COMPAT_DIR (default ~/.cache/airflow-codeagent-compat)
# and are rebuilt on every run; pip's wheel cache keeps that quick.
# Exits non-zero if any minor failed to install or to pass.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
COMPAT_DIR="${CODEAGENT_COMPAT_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/airflow-codeagent-compat}"
PYTHON="${PYTHON:-python3}"
DEFAULT_MINORS=(3.1 3.2)
MINORS=("$@")
[ ${#MINORS[@]} -gt 0 ] || MINORS=("${DEFAULT_MINORS[@]}")

bounds_for() {  # MINOR -> pip constraints, one a line
  case "$1" in
    # Airflow 3.2 leaves FastAPI unbounded; FastAPI >= 0.137 brings cadwyn 9, with which the
    # task execution API (dag.test, workers) fails to build its schema ("TITerminalStatePayload
    # needs a discriminator field"). Airflow 3.3 bounds it the same way.
    # With svcs 26.2 (newer than Airflow 3.2), Airflow 3.2's in-process execution API (dag.test)
    # has no services registry in app.state once its lifespan has run: every task fails with
    # "'State' object has no attribute 'svcs_registry'" (fine with svcs 26.1). Airflow 3.3
    # reworked that lifespan handling.
    3.2) printf '%s\n' "fastapi<0.137" "svcs<26.2" ;;
  esac
}

deselects_for() {  # MINOR -> pytest node ids left out on that minor, one a line
  # The task state store (the default home of the retry journal) is new in Airflow 3.3; on
  # older minors the journal needs replay_storage=, which test_retry_replay_through_object_storage
  # covers.
  case "$1" in
    3.1|3.2) echo "tests/integration/test_airflow_operator.py::test_retry_replays_paid_steps_from_the_task_state_store" ;;
  esac
  # Before 3.3, dag.test() runs a deferred task's trigger in process, and that in-process
  # supervisor does not answer the HITL trigger's GetHITLDetailResponse (only the triggerer
  # does): every human-in-the-loop task fails in dag.test() there, ours or Airflow's own. The
  # last two would pass for that wrong reason (they expect the approval step to fail).
  case "$1" in
    3.1|3.2) printf '%s\n' \
      "tests/integration/test_approval.py::test_approve_applies_each_intent_once_even_when_apply_is_retried" \
      "tests/integration/test_approval.py::test_reject_applies_nothing_and_records_who_and_why" \
      "tests/integration/test_approval.py::test_approving_only_some_intents_applies_just_those" \
      "tests/integration/test_approval.py::test_approving_an_intent_that_was_not_staged_approves_nothing" \
      "tests/integration/test_approval.py::test_intents_changed_while_waiting_approve_nothing" ;;
  esac
}

TESTS=(tests/unit/test_airflow_compat.py tests/integration/test_airflow_operator.py tests/integration/test_approval.py
       tests/integration/test_example_dags.py tests/integration/test_connection_tools.py
       tests/integration/test_trace_view_api.py tests/integration/test_trace_view_fab.py)
if [ -x "${CODEAGENT_CHROMIUM:-/usr/bin/chromium}" ] && [ -x "${CODEAGENT_CHROMEDRIVER:-/usr/bin/chromedriver}" ]; then
  TESTS+=(tests/browser)
else
  echo "compat: chromium or chromedriver missing: the browser test is left out"
fi

mkdir -p "$COMPAT_DIR"
summary=()
failed=0

setup_venv() {  # MINOR VENV: writes the installed Airflow version to VENV/airflow-version
  local minor="$1" venv="$2" next
  next="${minor%.*}.$(( ${minor#*.} + 1 ))"
  rm -rf "$venv"
  "$PYTHON" -m venv "$venv" || return 1
  "$venv/bin/python" -m pip install -q --upgrade pip || return 1
  bounds_for "$minor" > "$venv/constraints.txt"
  "$venv/bin/python" -m pip install -q -c "$venv/constraints.txt" "apache-airflow>=${minor},<${next}" || return 1
  local version
  version="$("$venv/bin/python" -c 'from importlib.metadata import version; print(version("apache-airflow"))')" \
    || return 1
  printf 'apache-airflow==%s\napache-airflow-core==%s\n' "$version" "$version" >> "$venv/constraints.txt"
  "$venv/bin/python" -m pip install -q -c "$venv/constraints.txt" -e "$ROOT[test]" || return 1
  "$venv/bin/python" -m pip check || return 1
  echo "$version" > "$venv/airflow-version"
}

for minor in "${MINORS[@]}"; do
  venv="$COMPAT_DIR/venv-$minor"
  echo "== compat: Airflow $minor.x: building $venv"
  started=$SECONDS
  if ! setup_venv "$minor" "$venv"; then
    summary+=("Airflow $minor.x: FAILED to install ($((SECONDS - started))s)")
    failed=1
    continue
  fi
  version="$(cat "$venv/airflow-version")"
  built=$((SECONDS - started))
  echo "== compat: apache-airflow $version installed in ${built}s; running ${TESTS[*]}"
  started=$SECONDS
  deselect=()
  while read -r node; do
    [ -n "$node" ] || continue
    echo "== compat: left out on $minor: $node"
    deselect+=(--deselect "$node")
  done < <(deselects_for "$minor")
  # The venv's own pytest; -p no:cacheprovider keeps its cache out of the work tree.
  if "$venv/bin/python" -m pytest -p no:cacheprovider -q "${TESTS[@]}" "${deselect[@]}"; then
    result=ok
  else
    result=FAILED
    failed=1
  fi
  summary+=("apache-airflow $version: tests $result (venv ${built}s, tests $((SECONDS - started))s)")
done

echo "== compat summary"
printf '  %s\n' "${summary[@]}"
exit "$failed"
