"""`python -m tld.training --config cfg.yaml --set key=value`: the `tld train` command as a module,
so it also runs under `accelerate launch -m tld.training` and `torchrun -m tld.training`."""

from __future__ import annotations

import sys

from tld.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
