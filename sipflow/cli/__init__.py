"""The ``sipflow`` command line: a thin click layer over the library.

``app`` holds the group, the exit codes and the shared helpers; ``analysis``, ``export`` and ``probe`` the
commands.
"""
from sipflow.cli.app import Exit, main
from sipflow.cli.probe import ProbeExit
from sipflow.cli import export as _export_commands  # noqa: E402,F401  (registers ``export`` on ``main``)
from sipflow.cli import live as _live_commands  # noqa: E402,F401  (registers ``live`` on ``main``)

__all__ = ["Exit", "ProbeExit", "main"]
