"""What every part shares: the one clock and the one error family."""
