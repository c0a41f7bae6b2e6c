"""Testing helpers shipped with slotguard: pytest fixtures that start real servers."""
