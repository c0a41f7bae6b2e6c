"""Test infrastructure of slotguard itself: real-server fixtures, waiting, change builders."""
