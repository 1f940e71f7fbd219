"""``python -m zkserver.emulator push|pull ...``: run a device emulator."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

COMMANDS = {
    "push": ("zkserver.emulator.push", "emulate a push (ADMS/iclock HTTP) terminal"),
    "pull": ("zkserver.emulator.pull", "emulate a pull (ZK binary, port 4370) terminal"),
}


def usage() -> str:
    lines = ["usage: python -m zkserver.emulator {push,pull} [options]", "", "commands:"]
    lines += [f"  {name:6}{help}" for name, (_, help) in COMMANDS.items()]
    lines.append("\n'python -m zkserver.emulator <command> --help' describes each command.")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to ``zkserver.emulator.<command>.main(rest)``, importing it lazily."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name = COMMANDS[command][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:
            raise
        print(
            f"the {command} emulator is not available ({module_name} is missing)", file=sys.stderr
        )
        return 2
    status = module.main(rest)
    return status if isinstance(status, int) else 0


if __name__ == "__main__":
    sys.exit(main())
