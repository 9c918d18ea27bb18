"""Read by gunicorn from the working directory (the repo root, or /app in the image).

- Metrics: every gunicorn worker counts its HTTP requests into files in PROMETHEUS_MULTIPROC_DIR, and a
  scrape sums them (prometheus-client multiprocess mode). The variable must be set before a worker imports
  prometheus_client, hence here. Without one given, a private directory is made and removed on exit; a
  given one is emptied at start (files of an earlier run would add old counts).
- Concurrency: several worker processes, each with threads, so a slow listing never holds up /healthz,
  /readyz or a job poll. WEB_CONCURRENCY (processes, default 2) and GUNICORN_THREADS (threads per process,
  default 8); GUNICORN_CMD_ARGS or the command line still override both. State is per process (each builds
  its own connections); metrics are summed across processes (above); the listing index is in Redis.
  The worker class is gthread with one change (service/gunicorn_worker.py): a registry sends its
  notifications one POST at a time on one kept-alive connection, and the thread that answered one serves
  the next itself when it comes at once, instead of handing the connection back to the main thread. Not
  `sync` (no keep-alive, and one slow listing would block its process), nor gevent/eventlet (they patch the
  threads and sockets Redis, requests and the docker SDK use). Two processes by default: the API's own CPU
  per request is small, the machine it was measured on has two cores, and each process keeps its own
  queue of claims to check and its own connections, so more processes buy memory, not throughput.
- Logs: LOG_FORMAT=json makes gunicorn's own records JSON too (the app configures its own in create_app).
"""

import glob
import os
import shutil
import tempfile

_made_dir = False
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="registry-janitor-metrics-")
    _made_dir = True


workers = int(os.environ.get("WEB_CONCURRENCY") or 2)
threads = int(os.environ.get("GUNICORN_THREADS") or 8)
# gthread that serves a kept-alive connection's next request in the same thread when it comes at once (a
# registry's notifications: one POST per event, in sequence): service/gunicorn_worker.py.
worker_class = "service.gunicorn_worker.Worker"


def on_starting(server):  # noqa: ANN001, ANN201 - gunicorn's hook signature
    for stale in glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], "*.db")):
        os.remove(stale)


def child_exit(server, worker):  # noqa: ANN001, ANN201
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):  # noqa: ANN001, ANN201
    if _made_dir:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


if os.environ.get("LOG_FORMAT", "").strip().lower() == "json":
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": "janitor.logs.ContextFilter"}},
        "formatters": {"json": {"()": "janitor.logs.JanitorJsonFormatter"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr",
                                "formatter": "json", "filters": ["context"]}},
        "loggers": {
            "gunicorn.error": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
            # The app logs one line per request itself, with the request, job and window ids.
            "gunicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
        "root": {"level": "INFO", "handlers": []},
    }

# Answers gunicorn gives itself (414 for an over-long request line, 431, 400) in the JSON error shape.
# Imported after PROMETHEUS_MULTIPROC_DIR is set: the service package loads prometheus_client.
from service import gunicorn_errors  # noqa: E402

gunicorn_errors.install()
