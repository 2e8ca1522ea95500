"""Benchmarks, fault drills and the soak run: run by make targets, never by the test suite.

bench.stack is the exception: fault tests import it to start a private system.
"""
