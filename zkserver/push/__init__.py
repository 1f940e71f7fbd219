"""Push terminals (ADMS / iclock HTTP protocol).

- :mod:`zkserver.push.iclock`: the pure protocol core (ATTLOG, OPERLOG, photos, commands,
  handshake);
- :mod:`zkserver.push.v3`: the push 3.x dialect (registry, push settings, rtlog);
- :mod:`zkserver.push.timezones`: a device's time zone as a UTC offset, the handshake's
  ``TimeZone`` value;
- :mod:`zkserver.push.resource`: the Klein resource (imported on its own: it needs the store).
"""

from zkserver.push.iclock import (
    CommandResult,
    MalformedPhoto,
    OperlogBatch,
    Photo,
    parse_attlog,
    parse_operlog,
)
from zkserver.push.timezones import timezone_minutes, timezone_value, utc_offset_minutes
from zkserver.push.v3 import format_push_config, parse_rtlog, registry_code

__all__ = [
    "CommandResult",
    "MalformedPhoto",
    "OperlogBatch",
    "Photo",
    "format_push_config",
    "parse_attlog",
    "parse_operlog",
    "parse_rtlog",
    "registry_code",
    "timezone_minutes",
    "timezone_value",
    "utc_offset_minutes",
]
