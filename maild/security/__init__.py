"""Who may do what: signatures maild hands out, proof of who wrote, connection limits."""
