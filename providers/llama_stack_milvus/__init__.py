"""Milvus vector_io providers (inline Milvus Lite, remote Milvus server) for Llama Stack 0.7.x."""
