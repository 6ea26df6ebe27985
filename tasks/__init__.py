"""Prefect tasks: thin, cached wrappers over `r3` functions."""

from tasks._env import configure_prefect_env

configure_prefect_env()
