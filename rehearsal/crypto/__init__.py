"""Keys: the master-key ring, per-tenant data keys, and the one place that resolves the master key."""
