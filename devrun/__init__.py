"""The local supervisor behind `make run`: starts Redis, a worker and the gateway.

It stands above `gateway` and `worker` (they never import it) and no production image copies it;
the integration tests and the benchmarks start the system with it too.
"""
