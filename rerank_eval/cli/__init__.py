"""The `rerank-eval` command line (Typer): `app` holds the policy, each module its commands.

Importing this package registers every command on `app`, in the order `--help` lists them.
"""

# isort: skip_file
from rerank_eval.cli.app import app, main
from rerank_eval.cli import benchmark, results_commands, tools, catalog, bench

__all__ = ["app", "bench", "benchmark", "catalog", "main", "results_commands", "tools"]
