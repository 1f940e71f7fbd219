"""Device control: typed commands with a lifecycle, for push and pull terminals alike.

- :mod:`zkserver.commands.spec` (pure): the types, their fields, validation, kinds.
- :mod:`zkserver.commands.service`: :class:`Commands`, the lifecycle (queue, hand out,
  finish, cancel, time out) and the interface the pull side uses (see its docstring).
- :mod:`zkserver.push.commands` (pure): the iclock command lines.
- :mod:`zkserver.store.commands`: the store's transaction scripts (migration 0003).
"""

from zkserver.commands.service import Batch, Commands, DeviceNotReady, NotCancellable, TooLarge
from zkserver.commands.spec import (
    COMMAND_TYPES,
    CommandError,
    CommandSpec,
    Unsupported,
    check_for_device,
    parse_command,
    pull_result,
    push_result,
    supports,
)

__all__ = [
    "COMMAND_TYPES",
    "Batch",
    "CommandError",
    "CommandSpec",
    "Commands",
    "DeviceNotReady",
    "NotCancellable",
    "TooLarge",
    "Unsupported",
    "check_for_device",
    "parse_command",
    "pull_result",
    "push_result",
    "supports",
]
