"""The Milvus vector index: the memory's vectors in a Milvus collection, reached by URI with pymilvus."""
