"""Request domain: statuses, loop rules, agent commands (pure)."""
