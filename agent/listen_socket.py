"""Listening sockets for our HTTP servers (wacall serve, and the simulator's Meta and test servers).

uvicorn writes a response's headers and its body as two sends. On a socket without TCP_NODELAY, Nagle's
algorithm holds the body back until the peer acknowledges the headers, and the peer delays that ACK by up
to 40 ms: measured on loopback, every POST took 44 ms instead of 2 ms. asyncio sets TCP_NODELAY only on
sockets created with ``proto=IPPROTO_TCP``, which neither uvicorn's own sockets nor ``socket.socket()``
are; a listening socket's option is inherited by every connection it accepts.
"""

from __future__ import annotations

import socket


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket for uvicorn's ``serve(sockets=[...])``; port 0 picks a free port."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock
