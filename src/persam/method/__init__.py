"""The PerSAM / PerSAM-F method on tensors (no file IO, no numpy/PIL inputs)."""
