"""Which process runs a session (exact vs guess), and the one module that signals."""
