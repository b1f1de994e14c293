"""Governance of memories and model updates: audit log, validation gate, PII scan, versions, retention."""
