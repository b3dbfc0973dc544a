"""`python -m symbuilder` is the `symbuilder` command."""
from .cli import run

run()
