"""Command line: try the agent without Airflow."""
