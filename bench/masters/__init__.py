"""Broker master writers: synthetic files in each broker's real format, for the loader
benchmarks and round-trip tests."""
