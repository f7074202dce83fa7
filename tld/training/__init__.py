"""Training: config, EMA, checkpoints, augmentation, objective, the loop and export.

    from tld.training import TrainConfig, load_config, train
    result = train(load_config("configs/emoji_small.yaml", ["steps=100"]))

`python -m tld.training` is the `tld train` command (works under `accelerate launch -m`).
"""

from tld.training.config import TrainConfig, load_config
from tld.training.loop import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "load_config", "train"]
