"""Example DAG ``codeagent_data_quality_fix`` end to end against a real model: stage, approve, apply.

    python scripts/approval_demo.py --api-base http://127.0.0.1:8765/v1 [--model openai/qwen-coder-1.5b]

In a fresh AIRFLOW_HOME with a SQLite metadata DB it builds a small warehouse
(SQLite) whose ``orders`` table has negative totals and unknown status
values, points the ``warehouse`` and ``litellm_default`` connections at it
and at the model, and runs the DAG with ``dag.test()``. The agent investigates
through the read/write ``SQLTool``; its UPDATEs are staged, not run. A
reviewer answers the Required Action through Airflow's REST API (the call the
UI makes), approving every intent or only those given with ``--only``, or
rejecting with ``--reject``. It prints what the reviewer was shown, the
decision, what the apply step ran and the table before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DAG_ID = "codeagent_data_quality_fix"
ORDERS = [(1, 10, 25.0, "paid"), (2, 11, -12.5, "paid"), (3, 12, 40.0, "open"), (4, 10, 8.0, "PAID"),
          (5, 13, -3.0, "open"), (6, 14, 19.9, "refunded"), (7, 12, 5.0, "shipped?"), (8, 11, 60.0, "open")]


def make_warehouse(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER, total NUMERIC, status TEXT)")
    conn.executemany("INSERT INTO orders VALUES (?, ?, ?, ?)", ORDERS)
    conn.commit()
    conn.close()


def table(path: Path) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return list(conn.execute("SELECT id, customer_id, total, status FROM orders ORDER BY id"))
    finally:
        conn.close()


def configure(home: Path, warehouse: Path, args: argparse.Namespace) -> None:
    """Environment first: Airflow reads its configuration once, at import."""
    os.environ.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags_examples"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW_CONN_WAREHOUSE": json.dumps({"conn_type": "sqlite", "host": str(warehouse)}),
        "AIRFLOW_CONN_LITELLM_DEFAULT": json.dumps({
            "conn_type": "litellm", "host": args.api_base, "password": args.api_key,
            "extra": {"model": args.model, "temperature": args.temperature}}),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    })


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--api-base", required=True, help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8765/v1")
    parser.add_argument("--model", default="openai/qwen-coder-1.5b")
    parser.add_argument("--api-key", default="local")
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--only", default="", help='approve only these intents, e.g. "1" (default: all)')
    parser.add_argument("--reject", action="store_true", help="reject instead of approving")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for the agent's intents")
    parser.add_argument("--home", type=Path, default=None, help="AIRFLOW_HOME to use (default: a new temp dir)")
    args = parser.parse_args()

    home = args.home or Path(tempfile.mkdtemp(prefix="codeagent-approval-demo-"))
    home.mkdir(parents=True, exist_ok=True)
    warehouse = home / "warehouse.db"
    warehouse.unlink(missing_ok=True)
    make_warehouse(warehouse)
    configure(home, warehouse, args)
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, stdout=subprocess.DEVNULL)

    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 3.1
        from airflow.models.dagbag import DagBag

    from airflow_codeagent.testing.approvals import ApprovalResponder, api_client

    before = table(warehouse)
    dag = DagBag(str(REPO / "dags_examples")).get_dag(DAG_ID)
    choice = "Reject" if args.reject else "Approve"
    with api_client("reviewer") as client:
        responder = ApprovalResponder(client, DAG_ID, choice, {"reason": "demo", "only": args.only},
                                      timeout_s=args.timeout, poll_s=2.0)
        responder.start()
        dag_run = dag.test()
        responder.join(10)

    print(f"AIRFLOW_HOME {home}\n")
    if responder.seen is None:
        print(f"No approval was requested ({responder.error or 'the agent staged nothing'}).")
    else:
        print(f"== What the reviewer saw: {responder.seen['subject']}\n{responder.seen['body']}\n")
        print(f"== The reviewer answered {choice}{' only ' + args.only if args.only else ''}: "
              f"HTTP {responder.response.status_code if responder.response is not None else '-'}")
    print("\n== Task states")
    for ti in sorted(dag_run.get_task_instances(), key=lambda t: t.task_id):
        print(f"  {ti.task_id:<26} {ti.state}")
    print("\n== orders before -> after")
    after = dict((row[0], row) for row in table(warehouse))
    for row in before:
        mark = "" if after.get(row[0]) == row else f"  ->  {after.get(row[0])}"
        print(f"  {row}{mark}")
    print(f"\nThe trace: python -m airflow_codeagent trace {DAG_ID} fix_quality.agent  (with AIRFLOW_HOME={home})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
