"""Checks of the project's own structure (standard library only): its import graph and layers."""
