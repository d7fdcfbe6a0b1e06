"""Subject tags, reply prefixes and header matching (pure)."""
