"""The demo: the whole laboratory on a laptop CPU, one module per section (`run.py` runs them in order)."""
