"""``python -m ollamad.runner --fd N --parent-pid P``: the runner child process.

It must never outlive the daemon that started it: the kernel kills it when the parent dies
(PR_SET_PDEATHSIG), it refuses to start if the parent is already gone, and it exits when the
daemon closes its end of the socket.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import socket
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    # The parent may have died before the prctl: then nobody would ever send the signal.
    if os.getppid() != parent_pid:
        sys.exit(f"runner: the parent process {parent_pid} is gone")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m ollamad.runner")
    parser.add_argument("--fd", type=int, required=True, help="the inherited socket to serve")
    parser.add_argument("--parent-pid", type=int, required=True, help="the daemon's pid")
    args = parser.parse_args()
    die_with_parent(args.parent_pid)
    verbose = bool(os.environ.get("OLLAMA_DEBUG"))
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    # Imported only now: loading llama.cpp takes a while, and the guard above comes first.
    from ollamad.runner.child import serve

    serve(socket.socket(fileno=args.fd), verbose)
    logging.getLogger("ollamad.runner").info("the daemon closed the connection; exiting")
    sys.stderr.flush()
    # Not a normal interpreter exit: the decode thread may be inside llama.cpp.
    os._exit(0)


if __name__ == "__main__":
    main()
