"""RQ's workers as this project runs them: stopping within seconds.

RQ reads a worker's pubsub channel (its commands: stop a job, shut down) with a 60 s blocking read, and its
teardown waits for that read before the process can exit: every SIGTERM took a minute, and run.sh stopped Redis
under a webhook process still shutting down. Here the read is 1 s; nothing else changes.
"""

from __future__ import annotations

import rq


class _QuickStop:
    def subscribe(self) -> None:
        self.pubsub = self.connection.pubsub()  # type: ignore[attr-defined]
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})  # type: ignore[attr-defined]
        self.pubsub_thread = self.pubsub.run_in_thread(
            sleep_time=1, daemon=True, exception_handler=self._pubsub_exception_handler)  # type: ignore[attr-defined]


class Worker(_QuickStop, rq.Worker):
    """A forking RQ worker (windows run in its work horse)."""


class SimpleWorker(_QuickStop, rq.SimpleWorker):
    """An RQ worker that runs jobs in its own process (webhook deliveries)."""
