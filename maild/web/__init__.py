"""HTTP endpoints: health, signed links."""
