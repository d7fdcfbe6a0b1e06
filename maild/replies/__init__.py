"""Outgoing mail: rendering, composition, quote stripping and the outbox sender."""
