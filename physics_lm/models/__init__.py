"""Models: the GPT-2 family (gpt2.py) and low-rank adapters."""
