"""Example training configs (YAML), installed as the package data `tld.configs`."""
