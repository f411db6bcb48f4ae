"""Offline by design: with ``MEDSSL_OFFLINE=1`` any attempt to reach the network is a clear error.

Hospital research containers run where there is no internet. A library that tries to download
something there (weights from a hub, a data set, a version check) does not fail: it waits for a
DNS answer or a TCP handshake that never comes, for minutes. :func:`install` adds an audit hook
(PEP 578) that sees every name lookup (``socket.getaddrinfo``, ``gethostbyname``) and every
``socket.connect`` made from Python, and raises :class:`NetworkBlocked` naming the host at once,
before a packet leaves the machine.

Allowed: Unix sockets, the loopback addresses (127.0.0.0/8, ::1), ``localhost`` and this
machine's own host name (torchrun and DDP rendezvous on one node), and the hosts listed in
``MEDSSL_OFFLINE_ALLOW`` (comma-separated names or addresses, e.g. a multi-node rendezvous host).
Native code that opens sockets itself (NCCL, gloo) is not seen by the hook and not blocked.

:class:`NetworkBlocked` is a :class:`~medssl.errors.MedsslError` and deliberately not an
``OSError``: libraries catch ``OSError`` from a failed connection and retry or wrap it into
their own message; this one reaches the command line, which prints it as one line. An audit
hook cannot be removed, so :func:`install` adds one at most once per process and
:func:`set_enabled` turns it off again (tests).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys

from medssl.errors import MedsslError

ENV_VAR = "MEDSSL_OFFLINE"
ALLOW_VAR = "MEDSSL_OFFLINE_ALLOW"
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", ""}
_STATE = {"installed": False, "enabled": False, "allow": frozenset()}


class NetworkBlocked(MedsslError):
    """A network access was attempted while medssl runs offline (``MEDSSL_OFFLINE=1``)."""


def requested(env: dict | None = None) -> bool:
    """Whether the environment asks for offline mode (``MEDSSL_OFFLINE`` = 1, true, yes, on)."""
    value = (os.environ if env is None else env).get(ENV_VAR, "")
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _allowed_hosts() -> frozenset[str]:
    extra = {h.strip().lower() for h in os.environ.get(ALLOW_VAR, "").split(",") if h.strip()}
    try:
        extra |= {socket.gethostname().lower()}  # no lookup: the kernel's own name
    except OSError:
        pass
    return frozenset(extra)


def is_local(host) -> bool:
    """Whether ``host`` (a name, an address, bytes or ``None``) stays on this machine or is allowed."""
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    host = str(host).strip().strip("[]").lower()
    if host in _LOCAL_NAMES or host in _STATE["allow"]:
        return True
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if addr.is_loopback or addr.is_unspecified:
        return True
    mapped = getattr(addr, "ipv4_mapped", None)
    return bool(mapped is not None and mapped.is_loopback)


def _blocked(host, port) -> NetworkBlocked:
    where = f"{host}:{port}" if port not in (None, "", 0) else f"{host}"
    return NetworkBlocked(
        f"network access to {where} blocked: medssl runs offline ({ENV_VAR}=1). Models and data must come "
        f"from mounted folders; to allow this host set {ALLOW_VAR}={host}, or unset {ENV_VAR}"
    )


def _hook(event: str, args: tuple) -> None:
    if not _STATE["enabled"]:
        return
    if event == "socket.connect":
        sock, address = args
        if getattr(sock, "family", None) == getattr(socket, "AF_UNIX", None) or not isinstance(address, tuple):
            return
        host, port = address[0], address[1] if len(address) > 1 else None
        if not is_local(host):
            raise _blocked(host, port)
    elif event == "socket.getaddrinfo":
        host, port = args[0], args[1]
        if not is_local(host):
            raise _blocked(host, port)
    elif event in ("socket.gethostbyname", "socket.gethostbyaddr"):
        host = args[0]
        if not is_local(host):
            raise _blocked(host, None)


def install() -> None:
    """Block network access from Python in this process from now on (idempotent)."""
    _STATE["allow"] = _allowed_hosts()
    _STATE["enabled"] = True
    if not _STATE["installed"]:
        sys.addaudithook(_hook)
        _STATE["installed"] = True


def set_enabled(enabled: bool) -> None:
    """Turn an installed guard off or on again (an audit hook itself cannot be removed)."""
    _STATE["enabled"] = bool(enabled) and _STATE["installed"]


def enabled() -> bool:
    """Whether network access is being blocked in this process."""
    return _STATE["enabled"]


def install_from_env() -> bool:
    """:func:`install` when ``MEDSSL_OFFLINE`` asks for it (the CLI calls this first); returns whether it did."""
    if requested():
        install()
        return True
    return False
