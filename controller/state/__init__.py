"""State files: atomic JSON, the per-domain records, status documents, events and audit log."""
