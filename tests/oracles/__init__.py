"""Independent oracles for the tests: restatements of official and reference code that import nothing of persam."""
