"""`python -m stack up|down|status`."""

from stack.cli import app

app(prog_name="python -m stack")
