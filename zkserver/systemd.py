"""sd_notify(3) without libsystemd: tell systemd we are ready or stopping.

A few bytes over the AF_UNIX datagram socket named by ``$NOTIFY_SOCKET`` (a leading
``@`` is the abstract namespace). Without that variable (not under systemd, or not
``Type=notify``) it does nothing. A datagram send does not block.
"""

from __future__ import annotations

import os
import socket

from twisted.logger import Logger

__all__ = ["notify"]

log = Logger()


def notify(state: str, environ: dict[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. ``READY=1``); returns whether a notification was sent."""
    address = (environ if environ is not None else os.environ).get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.sendto(state.encode(), address)
    except OSError as e:
        log.warn("Could not notify systemd ({state}): {error}", state=state, error=str(e))
        return False
    return True
