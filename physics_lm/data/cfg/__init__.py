"""Part 1 data: layered CFGs, the jitted sampler with NT labels, and the grammar DPs."""
