"""What outlives transcripts: the SQLite store, summaries, git output, reconciliation."""
