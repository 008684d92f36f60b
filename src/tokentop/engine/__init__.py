"""Everything between a file on disk and a snapshot: tail, change feed, cold scan, ledger."""
