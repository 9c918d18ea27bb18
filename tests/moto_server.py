"""moto's S3 in server mode for the suite and the benchmarks: `python -m tests.moto_server PORT`.

moto's `ThreadedMotoServer` as shipped, with two per-request costs taken out. Neither has anything to do with
S3, and together they were a third of the server's CPU while a registry pushed through it (py-spy, the S3
push-safety test; the server was itself about half of that test's CPU):
- for every request, the dispatcher checks whether the Host header names a moto module by listing moto's
  package directory (a listdir and about 200 isdir calls: 23% of the server's samples). That listing does not
  change while the process runs, so it is read once;
- werkzeug logs every request at INFO to a stream nobody reads here (8%).
How each request is answered (moto's S3 backend, its XML, its errors) is unchanged.
"""

from __future__ import annotations

import logging
import sys
import time

import moto.backends
from moto.server import ThreadedMotoServer


def main(port: int) -> None:
    modules = frozenset(moto.backends.list_of_moto_modules())
    moto.backends.list_of_moto_modules = lambda: modules  # type: ignore[assignment,return-value]
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False).start()
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main(int(sys.argv[1]))
