"""Budgets, detectors, their settings, and the one Watchdog: snapshot -> decisions."""
