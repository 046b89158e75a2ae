"""`python -m libragrad_fx`: the command line."""
import sys

from .cli import main

sys.exit(main())
