"""Jobs over many files: benchmarks, DAVIS runs, PerSAM-assisted DreamBooth."""
