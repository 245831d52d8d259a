"""Metrics as sufficient statistics accumulated over a whole split (SPEC-data §2.9)."""
