"""One module per subcommand: ``register(commands, parents)`` adds its parser, ``run(args)`` runs it."""
from __future__ import annotations

from . import attribute, bench, check, demo, diff, explain, export, inspect

# in the order `libragrad-fx --help` lists them
COMMANDS = (inspect, diff, check, explain, attribute, export, demo, bench)
