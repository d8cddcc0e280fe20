"""A launcher that holds a listening socket and an open file of its own, for the tests of
forked local workers (test_local_workers.py): its workers must inherit neither.

``python fork_probe.py launch ARGS...`` prints ``listening PORT`` and runs ``dtrain ARGS...``
in this process. ``python fork_probe.py fit JOB WORKERS`` runs ``dtrain.fit`` on a job of
dist_jobs.py, then prints one JSON line: the error, if any, and this process's children left
(zombies included: a child nobody reaped was left behind too).
"""

import json
import logging
import os
import socket
import sys

from procs import children

HERE = os.path.dirname(os.path.abspath(__file__))
JOBS = os.path.join(HERE, "dist_jobs.py")


def main() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    held = open(__file__, "rb")  # noqa: SIM115 - held for the whole run on purpose
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "launch":
        print("listening", server.getsockname()[1], flush=True)
        from dtrain.cli import main as dtrain_main

        dtrain_main(args=args, prog_name="dtrain")
    elif mode == "fit":
        import dtrain

        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
        error = None
        try:
            dtrain.fit(JOBS, job_name=args[0], workers=int(args[1]))
        except Exception as e:  # noqa: BLE001 - reported to the test
            error = str(e)
        print(json.dumps({"error": error, "children": children(os.getpid())}), flush=True)
    held.close()
    server.close()


if __name__ == "__main__":
    main()
