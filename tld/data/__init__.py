"""Training data: the on-disk latent format (`tld.data.format`) and the datasets read from it
(`tld.data.dataset`): memory-mapped arrays served as deterministic, resumable batches."""

from tld.data.dataset import (
    LABELS,
    Batch,
    LatentDataset,
    StepBatches,
    collate_identity,
    derive_seed,
    pool_tokens,
    step_loader,
)

__all__ = [
    "LABELS",
    "Batch",
    "LatentDataset",
    "StepBatches",
    "collate_identity",
    "derive_seed",
    "pool_tokens",
    "step_loader",
]
