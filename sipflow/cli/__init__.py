"""The ``sipflow`` command line: a thin click layer over the library.

``app`` holds the group, the exit codes and the shared helpers; ``analysis`` and ``probe`` the commands.
"""
from sipflow.cli.app import Exit, main
from sipflow.cli.probe import ProbeExit

__all__ = ["Exit", "ProbeExit", "main"]
