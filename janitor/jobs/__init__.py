"""What a caller sees of the work: job records and Redis keys (`records`), requests waiting for the next window
(`pending`), webhooks (`webhooks`) and metrics (`telemetry`).

May import: `janitor.errors`, `janitor.config`.
"""
