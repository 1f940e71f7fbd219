"""Log formats for ``twistd --logger``: human text is twistd's default; JSON on request.

    twistd -n --logger=zkserver.logs.json_observer zkserver ...

writes one JSON object per line to standard output (for journald or a log shipper).
"""

from __future__ import annotations

import sys

from twisted.logger import ILogObserver, jsonFileLogObserver

__all__ = ["json_observer"]


def json_observer() -> ILogObserver:
    return jsonFileLogObserver(sys.stdout, recordSeparator="")
