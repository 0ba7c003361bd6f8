"""Multi-hop lookups: one tool's output is the next tool's input."""

from __future__ import annotations

from airflow_codeagent import tool

from bench.action_tasks import ActionTask
from bench.action_tasks import checks as c


def _lookup(kind: str, table: dict, key: str):  # type: ignore[no-untyped-def]
    if key not in table:
        raise KeyError(f"unknown {kind} {key!r}; known: {sorted(table)}")
    return table[key]


def shipping_cost() -> ActionTask:
    sku_warehouse = {"SKU-88": "WH-3", "SKU-12": "WH-1"}
    warehouse_city = {"WH-1": "Lyon", "WH-3": "Rotterdam"}
    rate = {"Lyon": 3.10, "Rotterdam": 2.40}

    @tool
    def get_warehouse_for_sku(sku: str) -> str:
        """Code of the warehouse that stocks a SKU.

        Args:
            sku: Stock keeping unit such as "SKU-12".
        """
        return _lookup("sku", sku_warehouse, sku)

    @tool
    def get_warehouse_city(warehouse: str) -> str:
        """The city a warehouse is in.

        Args:
            warehouse: Warehouse code such as "WH-1".
        """
        return _lookup("warehouse", warehouse_city, warehouse)

    @tool
    def get_shipping_rate(origin_city: str) -> float:
        """Shipping price in EUR per kg for parcels leaving a city.

        Args:
            origin_city: City the parcel ships from, such as "Lyon".
        """
        return _lookup("city", rate, origin_city)

    expected = round(7.5 * rate[warehouse_city[sku_warehouse["SKU-88"]]], 2)
    return ActionTask(
        name="shipping_cost", family="multihop",
        prompt=("A 7.5 kg parcel of SKU-88 must go to a customer in Lyon. It ships from the "
                "warehouse that stocks SKU-88. Return the shipping cost in EUR (weight times the "
                "rate of the city it ships from), rounded to 2 decimals."),
        tools=[get_warehouse_for_sku, get_warehouse_city, get_shipping_rate], expected=expected,
        check=c.number(expected), min_calls=3,
        reference=("city = get_warehouse_city(get_warehouse_for_sku('SKU-88'))\n"
                   "final_answer(round(7.5 * get_shipping_rate(city), 2))"),
        notes="the destination, Lyon, also has a rate: a decoy",
    )


def oncall_email() -> ActionTask:
    failed = {"orders_etl": "load_orders", "crm_etl": "extract_contacts"}
    owners = {("orders_etl", "extract_orders"): "team-sources",
              ("orders_etl", "load_orders"): "team-ingest",
              ("crm_etl", "extract_contacts"): "team-crm"}
    oncall = {"team-sources": "lee@corp.io", "team-ingest": "mara@corp.io", "team-crm": "ivo@corp.io"}

    @tool
    def get_failed_task(dag_id: str) -> str:
        """The task id that failed in the latest run of a DAG.

        Args:
            dag_id: DAG id such as "crm_etl".
        """
        return _lookup("dag", failed, dag_id)

    @tool
    def get_task_owner(dag_id: str, task_id: str) -> str:
        """The team that owns a task of a DAG.

        Args:
            dag_id: DAG id such as "crm_etl".
            task_id: Task id within that DAG.
        """
        key = (dag_id, task_id)
        if key not in owners:
            raise KeyError(f"no task {task_id!r} in dag {dag_id!r}")
        return owners[key]

    @tool
    def get_oncall_email(team: str) -> str:
        """Email address of the person on call for a team this week.

        Args:
            team: Team name such as "team-crm".
        """
        return _lookup("team", oncall, team)

    expected = oncall[owners[("orders_etl", failed["orders_etl"])]]
    return ActionTask(
        name="oncall_email", family="multihop",
        prompt=("The latest run of DAG \"orders_etl\" failed. Who should be paged? Return the email "
                "address of the on-call person of the team that owns the failed task."),
        tools=[get_failed_task, get_task_owner, get_oncall_email], expected=expected,
        check=c.text(expected), min_calls=3,
        reference=("t = get_failed_task('orders_etl')\n"
                   "final_answer(get_oncall_email(get_task_owner('orders_etl', t)))"),
    )


def lineage_root() -> ActionTask:
    upstream = {"report_sales": "mart_sales", "mart_sales": "stg_orders", "stg_orders": "raw_orders",
                "raw_orders": None, "mart_users": "stg_users", "stg_users": None}

    @tool
    def get_upstream(table: str) -> str | None:
        """The table a table is built from, or None for a source table.

        Args:
            table: Table name such as "mart_users".
        """
        if table not in upstream:
            raise KeyError(f"unknown table {table!r}; known: {sorted(upstream)}")
        return upstream[table]

    node = "report_sales"
    while upstream[node] is not None:
        node = upstream[node]
    return ActionTask(
        name="lineage_root", family="multihop",
        prompt=("Follow the lineage of table \"report_sales\" upstream, one get_upstream call at a "
                "time, until you reach a source table (one with no upstream). Return that source "
                "table's name."),
        tools=[get_upstream], expected=node, check=c.text(node), min_calls=4,
        reference=("t = 'report_sales'\n"
                   "while get_upstream(t) is not None:\n"
                   "    t = get_upstream(t)\n"
                   "final_answer(t)"),
    )


def order_region_totals() -> ActionTask:
    orders = {"O-1": {"customer_id": "C-1", "amount": 100.0},
              "O-2": {"customer_id": "C-2", "amount": 250.5},
              "O-3": {"customer_id": "C-1", "amount": 49.5}}
    customers = {"C-1": {"name": "Acme GmbH", "region": "EMEA"},
                 "C-2": {"name": "Kite Ltd", "region": "APAC"}}

    @tool
    def get_order(order_id: str) -> dict:
        """One order.

        Args:
            order_id: Order id such as "O-2".

        Returns:
            {"order_id": str, "customer_id": str, "amount": float}, amount in EUR.
        """
        return {"order_id": order_id, **_lookup("order", orders, order_id)}

    @tool
    def get_customer(customer_id: str) -> dict:
        """One customer.

        Args:
            customer_id: Customer id such as "C-2".

        Returns:
            {"customer_id": str, "name": str, "region": str}.
        """
        return {"customer_id": customer_id, **_lookup("customer", customers, customer_id)}

    expected: dict[str, float] = {}
    for order in orders.values():
        region = customers[order["customer_id"]]["region"]
        expected[region] = round(expected.get(region, 0.0) + order["amount"], 2)
    return ActionTask(
        name="order_region_totals", family="multihop",
        prompt=("For orders O-1, O-2 and O-3, look up each order's customer and that customer's "
                "region. Return a dict mapping region to the total order amount in EUR."),
        tools=[get_order, get_customer], expected=expected, check=c.mapping(expected),
        min_calls=5,
        reference=("totals = {}\n"
                   "for oid in ['O-1', 'O-2', 'O-3']:\n"
                   "    o = get_order(oid)\n"
                   "    r = get_customer(o['customer_id'])['region']\n"
                   "    totals[r] = totals.get(r, 0) + o['amount']\n"
                   "final_answer(totals)"),
    )


def connection_string() -> ActionTask:
    pipelines = {"orders_sync": {"connection_id": "pg_orders_ro", "schedule": "@daily"},
                 "crm_sync": {"connection_id": "pg_crm", "schedule": "@hourly"}}
    connections = {"pg_orders_ro": {"host": "pg-ro.internal", "port": 6432, "schema": "orders",
                                    "login": "reader"},
                   "pg_crm": {"host": "pg-crm.internal", "port": 5432, "schema": "crm",
                              "login": "crm"}}

    @tool
    def get_pipeline_config(pipeline: str) -> dict:
        """Configuration of a pipeline, including the id of the connection it reads from.

        Args:
            pipeline: Pipeline name such as "crm_sync".
        """
        return dict(_lookup("pipeline", pipelines, pipeline))

    @tool
    def get_connection(connection_id: str) -> dict:
        """Details of a database connection (no password).

        Args:
            connection_id: Connection id such as "pg_crm".
        """
        return dict(_lookup("connection", connections, connection_id))

    conn = connections[pipelines["orders_sync"]["connection_id"]]
    expected = f"{conn['host']}:{conn['port']}/{conn['schema']}"
    return ActionTask(
        name="connection_string", family="multihop",
        prompt=("Which database does pipeline \"orders_sync\" read from? Return it as the string "
                "\"<host>:<port>/<schema>\"."),
        tools=[get_pipeline_config, get_connection], expected=expected, check=c.text(expected),
        min_calls=2,
        reference=("conn = get_connection(get_pipeline_config('orders_sync')['connection_id'])\n"
                   "final_answer(f\"{conn['host']}:{conn['port']}/{conn['schema']}\")"),
    )


def final_price() -> ActionTask:
    products = {"P-100": {"price": 80.0, "category": "tools"},
                "P-200": {"price": 15.0, "category": "garden"}}
    discount = {"tools": 15, "garden": 5}
    vat = {"NL": 0.21, "DE": 0.19}

    @tool
    def get_product(sku: str) -> dict:
        """List price (EUR, before VAT) and category of a product.

        Args:
            sku: Product sku such as "P-200".
        """
        return dict(_lookup("sku", products, sku))

    @tool
    def get_category_discount(category: str) -> int:
        """Discount on a product category this week, in percent.

        Args:
            category: Category name such as "garden".
        """
        return _lookup("category", discount, category)

    @tool
    def get_vat_rate(country: str) -> float:
        """VAT rate of a country as a fraction (0.19 means 19 %).

        Args:
            country: ISO country code such as "DE".
        """
        return _lookup("country", vat, country)

    product = products["P-100"]
    expected = round(product["price"] * (1 - discount[product["category"]] / 100) * (1 + vat["NL"]), 2)
    return ActionTask(
        name="final_price", family="multihop",
        prompt=("What does a customer in the Netherlands (NL) pay for product P-100 this week? Apply "
                "its category's discount to the list price, then add the country's VAT. Return the "
                "price in EUR rounded to 2 decimals."),
        tools=[get_product, get_category_discount, get_vat_rate], expected=expected,
        check=c.number(expected), min_calls=3,
        reference=("p = get_product('P-100')\n"
                   "net = p['price'] * (1 - get_category_discount(p['category']) / 100)\n"
                   "final_answer(round(net * (1 + get_vat_rate('NL')), 2))"),
    )


TASKS = (shipping_cost, oncall_email, lineage_root, order_region_totals, connection_string,
         final_price)
