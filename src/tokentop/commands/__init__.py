"""One module per subcommand; common.py holds config loading and engine setup."""
