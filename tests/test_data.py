import numpy as np
import pytest
import torch
from train_fixtures import pattern_latents, write_dataset

from tld.data import LatentDataset, StepBatches, pool_tokens
from tld.errors import TLDError


def test_uint8_latents_dequantize_close_to_source(tmp_path):
    data = LatentDataset(write_dataset(tmp_path / "d", n=8, uint8=True, noise=0.0))
    batch = data.get(np.arange(8))
    expected = pattern_latents()[np.arange(8) % 4]
    assert batch.latents.dtype == torch.float32
    assert np.abs(batch.latents.numpy() - expected).max() <= 2.5 / 255 + 1e-6
    assert batch.text_emb.shape == (8, 16)


def test_arrays_are_memory_mapped(tmp_path):
    data = LatentDataset(write_dataset(tmp_path / "d", n=8))
    assert isinstance(data.arrays.latents, np.memmap)


def test_step_batches_cover_each_epoch_once_and_are_deterministic(tmp_path):
    data = LatentDataset(write_dataset(tmp_path / "d", n=12))
    a = StepBatches(data, batch_size=4, seed=3)
    b = StepBatches(data, batch_size=4, seed=3)
    epoch0 = np.concatenate([a.indices(k) for k in range(3)])
    assert sorted(epoch0.tolist()) == list(range(12))
    assert not np.array_equal(epoch0, np.arange(12))  # shuffled
    # random access (resume at step 4) gives what sequential reading gives
    assert np.array_equal(b.indices(4), a.indices(4))
    assert not np.array_equal(a.indices(3), a.indices(0))  # the next epoch reshuffles


def test_two_ranks_read_disjoint_rows(tmp_path):
    data = LatentDataset(write_dataset(tmp_path / "d", n=16))
    r0 = StepBatches(data, 4, seed=0, rank=0, world=2)
    r1 = StepBatches(data, 4, seed=0, rank=1, world=2)
    rows = np.concatenate([r0.indices(0), r1.indices(0), r0.indices(1), r1.indices(1)])
    assert sorted(rows.tolist()) == list(range(16))


def test_flip_mirrors_width(tmp_path):
    data = LatentDataset(write_dataset(tmp_path / "d", n=4, noise=0.0))
    flipped = data.get(np.arange(4), flip=np.array([True, False, False, False])).latents
    plain = data.get(np.arange(4)).latents
    assert torch.equal(flipped[0], plain[0].flip(-1))
    assert torch.equal(flipped[1:], plain[1:])


def test_tokens_pool_to_masked_mean():
    tokens = np.array([[[1.0, 1.0], [3.0, 3.0], [100.0, 100.0]]], dtype=np.float32)
    mask = np.array([[True, True, False]])
    assert np.allclose(pool_tokens(tokens, mask), [[2.0, 2.0]])


def test_token_embeddings_served_with_mask(tmp_path):
    data = LatentDataset(write_dataset(tmp_path / "d", n=8, tokens=5))
    batch = data.get(np.array([0, 1]))
    assert batch.text_emb.shape == (2, 5, 16) and batch.text_mask.shape == (2, 5)
    pooled = LatentDataset(tmp_path / "d", text="pooled").get(np.array([0, 1]))
    assert pooled.text_emb.shape == (2, 16) and pooled.text_mask is None


def test_class_labels(tmp_path):
    data = LatentDataset(write_dataset(tmp_path / "d", n=8, labels=True), condition="class")
    assert data.num_classes == 4
    assert data.get(np.array([5, 2])).labels.tolist() == [1, 2]


def test_nan_in_latents_names_first_bad_row(tmp_path):
    folder = write_dataset(tmp_path / "d", n=10)
    latents = np.load(folder / "latents.npy")
    latents[7, 0, 0, 0] = np.nan
    latents[9, 1, 2, 3] = np.inf
    np.save(folder / "latents.npy", latents)
    data = LatentDataset(folder)  # start-up reads no array data: the batch that holds the row fails
    data.get(np.arange(7))
    with pytest.raises(TLDError, match=r"latents\.npy has NaN/Inf values, first at row 7"):
        data.get(np.array([9, 8, 7, 1]))


def test_inf_in_text_embeddings(tmp_path):
    folder = write_dataset(tmp_path / "d", n=10)
    emb = np.load(folder / "text_emb.npy")
    emb[3, 0] = np.inf
    np.save(folder / "text_emb.npy", emb)
    data = LatentDataset(folder)
    with pytest.raises(TLDError, match=r"text_emb\.npy has NaN/Inf values, first at row 3"):
        data.get(np.array([5, 3, 0]))
    LatentDataset(folder, check_finite=False).get(np.array([3]))  # data.check_finite=false: not checked


def test_count_mismatch(tmp_path):
    folder = write_dataset(tmp_path / "d", n=10)
    np.save(folder / "text_emb.npy", np.zeros((9, 16), dtype=np.float16))
    with pytest.raises(TLDError, match="10 rows but text_emb.npy has 9"):
        LatentDataset(folder)


def test_missing_labels_for_class_condition(tmp_path):
    with pytest.raises(TLDError, match="labels.npy"):
        LatentDataset(write_dataset(tmp_path / "d", n=4), condition="class")


def test_tokens_requested_from_pooled_data(tmp_path):
    with pytest.raises(TLDError, match="pooled text embeddings"):
        LatentDataset(write_dataset(tmp_path / "d", n=4), text="tokens")


def test_empty_dataset_is_one_line(tmp_path):
    folder = write_dataset(tmp_path / "d", n=0, val=0)
    with pytest.raises(TLDError, match=f"latent dataset {folder} holds no samples"):
        LatentDataset(folder)
