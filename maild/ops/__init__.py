"""Operations: metrics, backups, config checks, reload and the service manager's signals."""
