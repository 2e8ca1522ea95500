"""Benchmarks, fault drills and the soak run: scripts that start the real system and measure it."""
