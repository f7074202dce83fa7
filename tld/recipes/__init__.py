"""Recipes: one command from raw sources to a shipped model (`tld recipe emoji`).

A recipe sits above training, the pipeline and evaluation and only calls their public functions;
nothing in the core imports it.
"""
