"""Training entry points: `train(config)` (notebooks, `accelerate.notebook_launcher`) and
`python -m tld.train --config cfg.yaml --set key=value` (works under `accelerate launch -m tld.train`).
"""

from __future__ import annotations

import sys

from tld.training.config import TrainConfig, load_config
from tld.training.loop import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "load_config", "train", "main"]


def main(argv: list[str] | None = None) -> int:
    from tld.cli import main as cli_main

    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
