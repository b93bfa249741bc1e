"""Data families: every task samples its own batches on device (see batch.py)."""
