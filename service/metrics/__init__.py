"""GET /metrics: Prometheus text format, the API's HTTP figures and the worker's figures from Redis."""
