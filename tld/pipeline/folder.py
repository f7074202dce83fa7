"""The model folder: what it holds, how it is found (local, hub, bundled) and its config.json.

    config.json            {"format": "tld-pipeline", "version": 1, "denoiser": {...}, "vae": ...,
                            "text_encoder": ..., "parameterization": {...}, "sampling": {...}, ...}
    denoiser.safetensors   the denoiser's weights
    vae/, text_encoder/    optional: the components, when config.json does not name hub specs

The file itself is read and written by `tld.model.files` (below the pipeline, so the denoiser and
the training export share it); this module adds what a loadable model folder must hold.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from tld.common import first_line, is_hub_id, write_folder_atomic
from tld.errors import TLDError
from tld.model.files import (
    CONFIG_NAME,
    FORMAT_NAME,
    FORMAT_VERSION,
    WEIGHTS_NAME,
    read_config_json,
    update_config_json,
)

__all__ = [
    "BUNDLED_MODEL",
    "CONFIG_NAME",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "WEIGHTS_NAME",
    "bundled_model_path",
    "export_fp16",
    "local_model_folder",
    "read_model_config",
    "update_config_json",
]

BUNDLED_MODEL = "tld-emoji"


def bundled_model_path(name: str = BUNDLED_MODEL) -> Path:
    """The demo model folder shipped in the package (`weights/<name>` in the repository)."""
    import tld.weights

    folder = Path(tld.weights.__file__).resolve().parent / name
    if not (folder / CONFIG_NAME).is_file():
        raise TLDError(
            f"no bundled model {name!r} in this install ({folder} has no {CONFIG_NAME}); "
            "pass a model folder or a hub id instead"
        )
    return folder


def local_model_folder(path_or_repo_id: str | os.PathLike, revision: str | None = None) -> Path:
    """A local folder as is; an 'owner/name' that is not one is downloaded from the Hugging Face hub."""
    local = Path(path_or_repo_id)
    if local.exists():
        return local
    ref = str(path_or_repo_id)
    if not is_hub_id(ref):
        raise TLDError(f"model folder not found: {ref!r} (expected a local folder or a hub id 'owner/name')")
    from huggingface_hub import snapshot_download  # only needed for hub ids

    try:
        return Path(snapshot_download(ref, revision=revision))
    except Exception as exc:  # noqa: BLE001 - offline, missing repo, auth: all mean "cannot get it"
        raise TLDError(
            f"model folder not found locally and could not download hub repo {ref!r}: {first_line(exc)}"
        ) from None


def read_model_config(folder: str | os.PathLike) -> dict[str, Any]:
    """Read and check a model folder's config.json; name every missing file in one error."""
    root = Path(folder)
    if not root.is_dir():
        raise TLDError(f"expected a model folder ({CONFIG_NAME} + {WEIGHTS_NAME}), got {str(folder)!r}")
    missing = [name for name in (CONFIG_NAME, WEIGHTS_NAME) if not (root / name).is_file()]
    config = read_config_json(root)
    if CONFIG_NAME not in missing:
        for key in ("vae", "text_encoder"):
            ref = config.get(key)
            if isinstance(ref, str) and not is_hub_id(ref) and not (root / ref).is_dir():
                missing.append(f"{ref}/")
        if "denoiser" not in config:
            raise TLDError(f"{root / CONFIG_NAME} has no 'denoiser' entry; is this a tld model folder?")
        if config.get("vae") is None:
            raise TLDError(f"{root / CONFIG_NAME} names no VAE ('vae': a subfolder name or a hub spec)")
    if missing:
        raise TLDError(f"model folder {str(root)!r} is missing {', '.join(missing)}")
    version = config.get("version", FORMAT_VERSION)
    if version > FORMAT_VERSION:
        raise TLDError(f"model folder format version {version} is newer than this tld ({FORMAT_VERSION})")
    return config


def export_fp16(folder: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Copy a model folder to `dest` with every safetensors file cast to float16 (loaders upcast on
    load); written under a temporary name and renamed, so `dest` is never half a folder."""
    from safetensors.torch import load_file, save_file

    read_model_config(folder)  # a folder that would not load is refused before anything is written

    def write_half(tmp: Path) -> None:
        shutil.copytree(folder, tmp)
        for path in tmp.rglob("*.safetensors"):
            state = load_file(str(path))
            half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
            save_file(half, str(path), metadata={"format": "pt"})

    return write_folder_atomic(dest, write_half)


def pixel_step(model: str | os.PathLike | None = None) -> tuple[int, int] | None:
    """(VAE factor, patch size) of a local model folder, None = the bundled model, read from
    config.json and vae/config.json without loading any weights; a size in pixels must be a
    multiple of their product. None where the folder or its VAE is not local (a hub id, a hub VAE
    spec): the load checks those sizes instead."""
    folder = bundled_model_path() if model is None else Path(model)
    config = read_config_json(folder) if folder.is_dir() else {}
    patch = (config.get("denoiser") or {}).get("patch_size")
    vae = config.get("vae")
    if not patch or not isinstance(vae, str) or not (folder / vae).is_dir():
        return None
    blocks = read_config_json(folder / vae).get("block_out_channels")
    return (2 ** (len(blocks) - 1), int(patch)) if blocks else None


def check_pixel_multiples(
    model: str | os.PathLike | None, sizes: dict[str, int | None], what: str | None = None
) -> None:
    """Refuse sizes a model cannot take before it loads. Without `what` each size is named as the
    pipeline names it ("height must be a positive multiple of 8 pixels (VAE factor 4 x patch 2)");
    with it the sizes are reported together ("outpaint margins must be multiples of 8 pixels")."""
    found = pixel_step(model)
    if found is None:
        return
    factor, patch = found
    step = factor * patch
    bad = {k: v for k, v in sizes.items() if isinstance(v, int) and (v % step or (what is None and v <= 0))}
    if bad and what is not None:
        raise TLDError(f"{what} must be multiples of {step} pixels, got {bad}")
    for name, value in bad.items():
        raise TLDError(
            f"{name} must be a positive multiple of {step} pixels (VAE factor {factor} x patch {patch}), "
            f"got {value!r}"
        )
