"""Thin Faust agents: read, call pure functions, write. Discovered by ``stream.app``."""
