"""The embedded default vector index: a FAISS index, snapshotted to a file, that follows the record store."""
