"""Run a module as `python -m` would, with every network call made fatal: `python no_network.py MODULE ARGS...`.

An audit hook (PEP 578) sees each socket operation of the Python process before it happens. A socket of the
internet families, a connection, a bind, a send or a name lookup, to any host including 127.0.0.1, ends the
process at once with exit code 97 and says which, so no `except` in the code under test can hide it."""

import os
import runpy
import socket
import sys

EXIT_CODE = 97
NETWORK = {
    "socket.connect",
    "socket.bind",
    "socket.sendto",
    "socket.sendmsg",
    "socket.getaddrinfo",
    "socket.gethostbyname",
    "socket.gethostbyname_ex",
    "socket.gethostbyaddr",
}


def no_network(event: str, args: tuple) -> None:
    internet_socket = event == "socket.__new__" and args[1] in (socket.AF_INET, socket.AF_INET6)
    if event in NETWORK or internet_socket:
        os.write(2, f"network touched: {event} {args[1:]!r}\n".encode())
        os._exit(EXIT_CODE)


if __name__ == "__main__":
    sys.addaudithook(no_network)
    module, sys.argv = sys.argv[1], sys.argv[1:]
    sys.path[0] = os.getcwd()  # as `python -m` has it, not this file's folder
    runpy.run_module(module, run_name="__main__", alter_sys=True)
