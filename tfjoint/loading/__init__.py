"""Model files in: read as data, every reference checked against an allowlist, then loaded (`load.load_model`)."""
