"""zkserver: a real-time attendance server for ZKTeco push and pull terminals."""

__version__ = "0.1.0"
__all__ = ["__version__"]
