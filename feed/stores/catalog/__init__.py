"""The in-memory post catalogue every API process serves from (`model.py`), and the loop that keeps
it in step with Redis (`sync.py`)."""
