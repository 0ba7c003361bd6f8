import sys

from airflow_codeagent.cli.main import main

sys.exit(main())
