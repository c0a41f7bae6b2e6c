"""``slotguard bench``: the benchmark suite -- core, worker drain against a naive agent, and the report."""
