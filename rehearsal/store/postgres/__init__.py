"""The PostgreSQL backend: records, sealed texts and pgvector vectors in one schema of one database."""
