"""FID / KID / precision-recall on cases with known answers, plus the colour and alignment helpers."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.linalg

from tld.encoders.colour import colour_words, dominant_colour, foreground_mask
from tld.errors import TLDError
from tld.eval import fid_from_features, frechet_distance, kid_from_features, precision_recall
from tld.eval.alignment import caption_rank_alignment
from tld.eval.hue import hue_check
from tld.eval.metrics import SmallSampleWarning, _mmd2_unbiased, feature_stats


def gaussian(n: int, d: int = 8, seed: int = 0, shift: float = 0.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)) + shift


def test_public_names():
    import tld.eval

    assert set(tld.eval.__all__) == {
        "frechet_distance",
        "fid_from_features",
        "kid_from_features",
        "precision_recall",
    }


def test_fid_of_a_set_with_itself_is_zero():
    a = gaussian(3000, 16)
    assert fid_from_features(a, a) == pytest.approx(0.0, abs=1e-8)


def test_fid_rises_monotonically_with_noise():
    a = gaussian(2500, 16, seed=1)
    noise = gaussian(2500, 16, seed=2)
    fids = [fid_from_features(a, a + s * noise) for s in (0.0, 0.1, 0.3, 0.6, 1.0, 2.0)]
    assert fids[0] == pytest.approx(0.0, abs=1e-8)
    assert all(x < y for x, y in zip(fids, fids[1:])), fids


def test_frechet_distance_matches_the_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(3)
    mu1, mu2 = rng.normal(size=10), rng.normal(size=10)
    s1, s2 = rng.uniform(0.1, 3, size=10), rng.uniform(0.1, 3, size=10)
    expected = ((mu1 - mu2) ** 2).sum() + (s1 + s2 - 2 * np.sqrt(s1 * s2)).sum()
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_matches_scipy_sqrtm_for_full_covariances():
    a, b = (
        gaussian(400, 12, seed=4),
        gaussian(300, 12, seed=5) @ np.random.default_rng(6).normal(size=(12, 12)),
    )
    (m1, c1), (m2, c2) = feature_stats(a), feature_stats(b)
    tr = np.trace(scipy.linalg.sqrtm(c1 @ c2)).real
    expected = ((m1 - m2) ** 2).sum() + np.trace(c1) + np.trace(c2) - 2 * tr
    assert frechet_distance(m1, c1, m2, c2) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_with_singular_covariances_is_finite_and_real():
    # N < D: rank-deficient covariances, where a plain sqrtm of the product goes complex.
    a, b = gaussian(20, 64, seed=7), gaussian(20, 64, seed=8, shift=0.5)
    with pytest.warns(SmallSampleWarning):
        value = fid_from_features(a, b)
    assert np.isfinite(value) and value > 0


def test_small_n_warns_and_large_n_does_not():
    with pytest.warns(SmallSampleWarning, match="N=100"):
        fid_from_features(gaussian(100, 4), gaussian(100, 4, seed=1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fid_from_features(gaussian(2048, 4), gaussian(2048, 4, seed=1))


def test_kid_is_unbiased_on_small_sets():
    # Many independent draws of 20 vs 20 points from one distribution: the unbiased MMD^2 averages
    # to 0 within its standard error, while the biased (V-statistic) estimator stays clearly positive.
    rng = np.random.default_rng(9)
    unbiased, biased = [], []
    for _ in range(300):
        x, y = rng.normal(size=(20, 6)), rng.normal(size=(20, 6))
        unbiased.append(_mmd2_unbiased(x, y))
        k = lambda p, q: (p @ q.T / 6 + 1) ** 3  # noqa: E731
        biased.append(k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean())
    se = np.std(unbiased) / np.sqrt(len(unbiased))
    assert abs(np.mean(unbiased)) < 3 * se
    assert np.mean(biased) > 10 * se


def test_kid_returns_mean_and_std_and_separates_distributions():
    same = kid_from_features(gaussian(300, 8, seed=1), gaussian(300, 8, seed=2), subsets=20, subset_size=100)
    apart = kid_from_features(
        gaussian(300, 8, seed=1), gaussian(300, 8, seed=2, shift=1.0), subsets=20, subset_size=100
    )
    assert abs(same[0]) < 3 * same[1] + 1e-3 and same[1] > 0
    assert apart[0] > 5 * apart[1] > 0


def test_precision_recall_identical_and_disjoint_sets():
    a = gaussian(300, 8, seed=1)
    assert precision_recall(a, a.copy(), k=3) == (1.0, 1.0)
    p, r = precision_recall(a, gaussian(300, 8, seed=2, shift=100.0), k=3)
    assert p == 0.0 and r == 0.0
    # Two samples of one distribution: both high; a shrunken fake set: precision high, recall low
    # (mode collapse); a widened one: the reverse.
    p, r = precision_recall(gaussian(500, 8, seed=1), gaussian(500, 8, seed=2), k=3)
    assert p > 0.8 and r > 0.8
    p, r = precision_recall(gaussian(500, 8, seed=1), 0.5 * gaussian(500, 8, seed=2), k=3)
    assert p > 0.95 and r < 0.3
    p, r = precision_recall(gaussian(500, 8, seed=1), 2 * gaussian(500, 8, seed=2), k=3)
    assert p < 0.3 and r > 0.95
    # A fake set that covers only part of the real one: high precision, low recall.
    part = a[a[:, 0] > 1.0]
    p, r = precision_recall(a, part, k=3)
    assert p > 0.9 and r < 0.6


@pytest.mark.parametrize(
    "a, b, match",
    [
        (np.ones((1, 4)), np.ones((5, 4)), "needs at least"),
        (np.ones((5, 4)), np.ones((5, 3)), "dimensions differ"),
        (np.full((5, 4), np.nan), np.ones((5, 4)), "NaN"),
        (np.ones(5), np.ones((5, 4)), "2-D"),
    ],
)
def test_bad_features_are_one_line_errors(a, b, match):
    for fn in (fid_from_features, kid_from_features, precision_recall):
        with pytest.raises(TLDError, match=match) as info:
            fn(a, b)
        assert "\n" not in str(info.value)


def test_colour_words_and_dominant_colour():
    assert colour_words("A Gray cat, a red-haired girl and a violet RED hat") == ["grey", "red", "purple"]
    assert colour_words("a cat") == []
    expected = {"red": (220, 30, 30), "green": (30, 160, 40), "blue": (30, 60, 220), "yellow": (240, 220, 30),
                "black": (10, 10, 10), "brown": (120, 70, 30), "pink": (250, 150, 190)}  # fmt: skip
    for name, rgb in expected.items():
        image = np.full((32, 32, 3), 255, np.uint8)
        image[8:24, 8:24] = rgb
        assert dominant_colour(image) == name
    # A thick black outline covering more pixels than the red fill: the hue still wins.
    outlined = np.full((32, 32, 3), 255, np.uint8)
    outlined[4:28, 4:28] = (20, 20, 20)
    outlined[8:24, 8:24] = (220, 30, 30)
    assert dominant_colour(outlined) == "red"
    outlined[8:24, 8:24] = (66, 66, 66)  # noto's "black" is #424242
    assert dominant_colour(outlined) == "black"
    on_black = np.zeros((32, 32, 3), np.uint8)
    on_black[8:24, 8:24] = 250
    assert dominant_colour(on_black) == "white"
    red = np.full((16, 16, 3), 255, np.uint8)
    red[4:12, 4:12] = (220, 30, 30)
    check = hue_check([red, red, red], ["a red ball", "a blue ball", "a ball"])
    assert (check.checked, check.matched, check.accuracy) == (2, 1, 0.5)


def test_dominant_colour_of_the_emoji_sets_palettes():
    # Fills the four emoji sets use for "<colour> heart": each must read as its own name.
    palette = {"purple": [(171, 71, 188), (170, 142, 214), (141, 101, 197)],
               "brown": [(183, 109, 84), (193, 105, 79), (109, 69, 52), (106, 70, 47)],
               "orange": [(244, 144, 12), (255, 103, 35), (226, 112, 34), (255, 152, 0)],
               "red": [(244, 67, 54), (221, 46, 68), (248, 49, 47)], "pink": [(244, 143, 177)]}  # fmt: skip
    for name, fills in palette.items():
        for rgb in fills:
            image = np.full((32, 32, 3), 255, np.uint8)
            image[8:24, 8:24] = rgb
            assert dominant_colour(image) == name, rgb


def test_background_coloured_pixels_enclosed_by_the_object_count_as_foreground():
    white_heart = np.full((32, 32, 3), 255, np.uint8)  # OpenMoji style: a dark outline around white
    white_heart[6:26, 6:26] = (30, 30, 30)
    white_heart[8:24, 8:24] = 255
    assert dominant_colour(white_heart) == "white"
    assert foreground_mask(white_heart)[16, 16] and not foreground_mask(white_heart)[2, 2]
    open_ring = white_heart.copy()
    open_ring[14:18, 6:8] = 255  # a gap joins the inside to the background: not enclosed any more
    assert not foreground_mask(open_ring)[16, 16]
    assert dominant_colour(open_ring) == "black"


def test_caption_rank_alignment():
    real = np.repeat(np.eye(4), 3, axis=0) * 10  # 4 clusters of 3 points
    captions = [c for c in ("cat", "dog", "car", "tree") for _ in range(3)]
    gen = np.eye(4) * 10 + 0.1
    good = caption_rank_alignment(gen, ["cat", "dog", "car", "tree"], real, captions, k=5)
    assert good.top1 == 1.0 and good.top5 == 1.0 and good.mrr == 1.0
    assert good.chance_top1 == pytest.approx(0.25)
    bad = caption_rank_alignment(gen, ["dog", "car", "tree", "cat"], real, captions, k=3)
    assert bad.top1 == 0.0 and bad.top5 == 0.0
    assert good.overlap == 1.0 and bad.overlap == 0.0 and 0.2 < good.chance_overlap < 0.3


def test_word_overlap_scores_unique_captions():
    # One image per caption, and prompts that differ from every real caption in the style word:
    # no exact hits, but the nearest neighbour shares the other words.
    real = np.eye(3) * 10
    captions = ["red apple, noto style", "blue car, noto style", "green tree, noto style"]
    prompts = ["red apple, openmoji style", "blue car, openmoji style", "green tree, openmoji style"]
    r = caption_rank_alignment(real + 0.1, prompts, real, captions, k=3)
    assert r.top1 == 0.0 and r.overlap == pytest.approx(3 / 5) and r.chance_overlap < r.overlap
