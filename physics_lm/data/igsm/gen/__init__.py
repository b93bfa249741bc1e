"""The on-device iGSM generator (pure JAX): the stages of the official procedure."""
