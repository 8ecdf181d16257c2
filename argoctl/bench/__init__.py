"""Benchmarks (`argoctl bench`): measure the agent; the agent never imports them."""
