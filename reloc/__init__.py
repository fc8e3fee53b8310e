"""Move a file between servers while clients download it."""
