"""TCP ports on 127.0.0.1 for servers the tests start (the stack package's helper, which benchmarks use too)."""

from stack.health import free_port

__all__ = ["free_port"]
