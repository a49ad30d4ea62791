"""Implementations of the core's ports, one folder per store."""
