"""The ``libragrad-fx`` command line: model specs, checks, graph diffs and the subcommands."""
from .main import main

__all__ = ["main"]
