"""meta.json names its VAE / text encoder by a relative path or an id, never the writer's absolute
path, so a dataset keeps working when its folder moves; old absolute paths still load."""

from __future__ import annotations

import json
import shutil

from tld.data.format import DatasetMeta, read_meta, write_meta
from tld.pipeline.folder import bundled_model_path


def _meta(vae_path: str) -> DatasetMeta:
    return DatasetMeta(
        count=1,
        latent_shape=[4, 8, 8],
        vae={"path": vae_path, "latent_scale": 1.0},
        text_encoder={"backend": "minilm", "path": None},
    )


def test_a_local_vae_is_stored_relative_and_follows_the_moved_folder(tmp_path):
    (tmp_path / "a" / "vae").mkdir(parents=True)
    (tmp_path / "a" / "data").mkdir()
    write_meta(tmp_path / "a" / "data", _meta(str(tmp_path / "a" / "vae")))
    stored = json.loads((tmp_path / "a" / "data" / "meta.json").read_text())
    assert stored["vae"]["path"] == "../vae" and stored["text_encoder"]["path"] is None
    shutil.move(tmp_path / "a", tmp_path / "b")
    assert read_meta(tmp_path / "b" / "data").vae["path"] == str((tmp_path / "b" / "vae").resolve())


def test_the_bundled_vae_is_stored_as_an_id(tmp_path):
    vae = bundled_model_path() / "vae"
    write_meta(tmp_path, _meta(str(vae)))
    assert json.loads((tmp_path / "meta.json").read_text())["vae"]["path"] == "bundled:tld-emoji/vae"
    assert read_meta(tmp_path).vae["path"] == str(vae.resolve())


def test_hub_ids_and_old_absolute_paths_load_as_written(tmp_path):
    write_meta(tmp_path, _meta("madebyollin/sdxl-vae-fp16-fix"))
    assert read_meta(tmp_path).vae["path"] == "madebyollin/sdxl-vae-fp16-fix"
    old = _meta(str(tmp_path / "elsewhere")).to_dict()  # a dataset written before: absolute path
    (tmp_path / "meta.json").write_text(json.dumps(old))
    assert read_meta(tmp_path).vae["path"] == str(tmp_path / "elsewhere")
