"""Bundled model folders, installed as the package data `tld.weights` (see tld.pipeline.folder)."""
