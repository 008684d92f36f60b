"""Simulated agents: real child processes writing real-shaped transcripts."""
