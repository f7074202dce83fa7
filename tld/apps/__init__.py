"""Apps built on the pipeline: the web UI and the HTTP API live here (their libraries come with the
`ui` extra: `pip install 'tld-diffusion[ui]'`). Nothing in the core imports this package."""
