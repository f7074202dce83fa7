"""Training internals: config, EMA, checkpoints, augmentation, objective and loop (see tld.train)."""
