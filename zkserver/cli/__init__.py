"""``zkserver``: the operator console, a client of a running server's HTTP API.

- :mod:`zkserver.cli.client`: the API over HTTP and the console's errors and exit codes;
- :mod:`zkserver.cli.rendering`: tables, JSON and messages;
- :mod:`zkserver.cli.tail`: following the event stream;
- :mod:`zkserver.cli.main`: the command line (argparse) and dispatch.
"""

from zkserver.cli.client import Client, CLIError
from zkserver.cli.main import build_parser, main
from zkserver.cli.rendering import device_table
from zkserver.cli.tail import SSEPrinter, tail

__all__ = ["CLIError", "Client", "SSEPrinter", "build_parser", "device_table", "main", "tail"]
