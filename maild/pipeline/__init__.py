"""The ingest pipeline, written down as data."""
