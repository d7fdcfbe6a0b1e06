"""Sources that bring mail in (SMTP, LMTP, IMAP, pipe) and the durable accept step."""
