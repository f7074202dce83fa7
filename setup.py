"""Package layout only (metadata lives in pyproject.toml): every tld.* package, plus the repository's
preprocessing/, weights/ and configs/ folders installed as tld.preprocessing, tld.weights (the bundled
models) and tld.configs (the example training configs). No other top-level import name is installed."""

from setuptools import find_packages, setup

MAPPED = {"tld.preprocessing": "preprocessing", "tld.weights": "weights", "tld.configs": "configs"}

setup(packages=find_packages(include=["tld", "tld.*"]) + list(MAPPED), package_dir=MAPPED)
