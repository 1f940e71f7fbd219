"""twistd plugin: ``twistd zkserver`` (see zkserver.tap)."""

from twisted.application.service import ServiceMaker

zkserver = ServiceMaker(
    "zkserver",
    "zkserver.tap",
    "Real-time attendance server for ZKTeco push (ADMS) and pull (port 4370) terminals.",
    "zkserver",
)
