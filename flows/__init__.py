"""Prefect flows and the `hubbleclip` CLI. Importing the package masks secrets in every log
record of the process (tasks/secrets.py): the CLI, every flow and every worker import it first."""

from tasks.secrets import install_redaction

install_redaction()
