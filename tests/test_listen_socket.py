"""Our HTTP servers' sockets answer without waiting for the peer's delayed ACK."""

from __future__ import annotations

import socket

from agent.listen_socket import listening_socket


def test_accepted_connections_send_at_once() -> None:
    """uvicorn sends headers and body apart: with Nagle on, the body waited up to 40 ms for an ACK."""
    server = listening_socket("127.0.0.1", 0)
    try:
        server.listen()
        client = socket.create_connection(server.getsockname())
        conn, _ = server.accept()
        with client, conn:
            assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        server.close()


def test_port_zero_picks_a_free_port_and_ipv6_any_is_accepted() -> None:
    sock = listening_socket("127.0.0.1", 0)
    with sock:
        assert sock.getsockname()[1] > 0
    if socket.has_ipv6:
        try:
            six = listening_socket("::", 0)
        except OSError:
            return  # no IPv6 on this machine (a network namespace with only lo may lack it)
        with six:
            assert six.family == socket.AF_INET6
