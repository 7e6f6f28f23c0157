"""Benchmarks of resolverd against its peers; `python -m bench core` runs the core figures."""
