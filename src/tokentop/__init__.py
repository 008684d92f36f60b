"""tokentop: top for token spend."""

__version__ = "0.1.0"
