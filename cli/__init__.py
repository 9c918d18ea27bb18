"""`registry-janitor`: the command line for people. It talks to the API over HTTP only (JANITOR_URL,
JANITOR_TOKEN) and imports nothing of the service or the worker, so it runs anywhere."""
