"""Pure decisions: facts in, verdicts out. Nothing in this package does I/O or reads the clock."""
