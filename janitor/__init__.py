"""Code shared by the API and the worker: registry, Docker, Redis and job records.

Nothing in this package imports Flask or RQ, so both processes can use it.
"""
