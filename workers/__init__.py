"""Processes and services around the agents: stack launchers, ranker client, replay, CLI."""
