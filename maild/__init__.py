"""maild: a help desk that lives entirely in email."""

__version__ = "0.1.0"
