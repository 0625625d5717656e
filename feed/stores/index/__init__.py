"""The post vector index: the interface (`vectors.py`), its Qdrant Edge and Qdrant server adapters, and
the loop that applies the index-operation stream to it (`sync.py`)."""
