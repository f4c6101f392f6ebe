"""mvcc."""
