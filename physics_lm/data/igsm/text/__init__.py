"""Host-side iGSM text tools: vocabulary, names, parser, judge, probe labels, sketch (no JAX)."""
