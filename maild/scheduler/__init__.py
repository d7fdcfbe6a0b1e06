"""Scheduled sweeps."""
