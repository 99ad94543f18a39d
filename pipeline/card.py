"""The dataset card: ``dataset.json`` and a short ``README.md`` next to ``_SUCCESS``.

What a paper's methods section needs to describe (and a reader to regenerate) a stylized dataset:
counts per class and per style, the style pool and its fingerprint (a sha256 of the sorted style
URIs), the stylizer and its weights' sha256, alpha and every pixel-changing setting
(``generations.pixel_settings``), the seeds, the output format, K, and how to load it (three lines
per format). The driver writes it after the run (``runner.finish``) from the current metrics files,
reading only the ``status``, ``style`` and ``label`` columns, in batches, as counts: it stays cheap on a
run of millions of rows.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from pipeline import generations, layout
from pipeline.storage import Storage

CARD_VERSION = 1
_BATCH_ROWS = 65_536
MERGE_EVERY = 32  # batches' counts kept before they are summed (memory: distinct values x this)


_COUNTED = pa.schema([("status", pa.string()), ("style", pa.string()), ("label", pa.string())])


def _merge(parts: list[pa.Table]) -> pa.Table:
    """Counts of the same value summed: ``values``, ``counts`` (Arrow's group-by, not a Python dict)."""
    summed = pa.concat_tables(parts).group_by("values").aggregate([("counts", "sum")])
    return pa.table({"values": summed.column("values"), "counts": summed.column("counts_sum")})


def count_rows(storage: Storage, keys: list[str]) -> dict[str, Any]:
    """ok and failed rows, ok rows per style and per label (None: no row has a label): the metrics files
    read as one dataset, three columns, in threads and batches (files without a label column read as
    nulls); each batch's ``value_counts`` are summed in Arrow, so only the distinct styles and labels
    ever become Python objects."""
    parts: dict[int, list[pa.Table]] = {1: [], 2: []}
    ok = failed = 0
    paths = [f"{storage.root}/{key}" for key in keys]  # keys from storage.list: already checked
    files = ds.dataset(paths, schema=_COUNTED, filesystem=storage.fs, format="parquet")
    for batch in files.to_batches(batch_size=_BATCH_ROWS, use_threads=True) if keys else ():
        good = batch.filter(pc.equal(pc.fill_null(batch.column(0), ""), "ok"))
        ok += good.num_rows
        failed += batch.num_rows - good.num_rows
        for column, pending in parts.items():
            counts = pc.value_counts(pc.drop_null(good.column(column)))
            pending.append(pa.table({"values": counts.field("values"), "counts": counts.field("counts")}))
            if len(pending) >= MERGE_EVERY:
                parts[column] = [_merge(pending)]
    styles, labels = (
        dict(sorted(zip(*(_merge(p).to_pydict().values()), strict=True))) if p else {} for p in parts.values()
    )
    return {"ok": ok, "failed": failed, "styles": styles, "labels": labels or None}


def pool_fingerprint(uris: list[str]) -> str:
    """sha256 of the sorted, newline-joined style URIs: two datasets made from the same pool share it."""
    return hashlib.sha256("\n".join(sorted(uris)).encode()).hexdigest()


def style_pool(config: Any, used: list[str]) -> dict[str, Any]:
    """The pool the styles were drawn from: the style manifest's URIs, else the job's one spec, else (a style
    column) the specs the rows used."""
    if config.style_manifest:
        from pipeline.styles import style_pool as read_pool

        uris, source = list(read_pool(config.style_manifest, config)), config.style_manifest
    elif config.style_column:
        uris, source = used, f"manifest column {config.style_column}"
    else:
        uris, source = [config.style], "style"
    return {"source": source, "split": config.style_split, "size": len(uris), "fingerprint": pool_fingerprint(uris)}


def class_names(config: Any, labels: dict[str, int] | None) -> list[str] | None:
    """The sorted class names (a label's index is its position, as torchvision's ImageFolder numbers them):
    the manifest's footer's, else the labels the rows carry."""
    from pipeline.manifest import class_names as recorded

    names = recorded(config.manifest, config.storage_options or None)
    return list(names) if names else (sorted(labels) if labels else None)


def loading(output_format: str, root: str, generation: int, shards: int, labelled: bool, ext: str) -> str:
    """Three lines that load the dataset, in its format."""
    if output_format == "webdataset":
        target = "cls" if labelled else "json"
        name = layout.container_key(0, generation, output_format)
        if shards > 1:  # webdataset expands a brace range
            name = name.replace("00000.tar", f"{{00000..{shards - 1:05d}}}.tar")
        return (
            "import webdataset as wds\n"
            f'ds = wds.WebDataset("{root}/{name}", shardshuffle=False).decode("pil").to_tuple("{ext}", "{target}")\n'
            "image, target = next(iter(ds))"
        )
    if output_format == "parquet":
        return (
            "from datasets import load_dataset\n"
            f'ds = load_dataset("parquet", data_files="{root}/{layout.SHARDS_PREFIX}/*.parquet", split="train")\n'
            'image, label = ds[0]["image"], ds[0]["label"]'
        )
    return (
        "from torchvision.datasets import ImageFolder\n"
        f'ds = ImageFolder("{root}/{layout.IMAGES_PREFIX}")  # classes: the folders under images/\n'
        "image, label = ds[0]"
    )


def build_card(
    config: Any,
    storage: Storage,
    metrics_keys: list[str],
    *,
    generation: int,
    shards: int,
    weights: dict[str, str],
    weights_sha256: str | None,
) -> dict[str, Any]:
    """``dataset.json``'s document for the current generation's metrics files."""
    counts = count_rows(storage, metrics_keys)
    names = class_names(config, counts["labels"])
    root = storage.root_uri.rstrip("/")
    shard_files = []
    if config.output_format != "files":
        shard_files = [storage.uri(layout.container_key(s, generation, config.output_format)) for s in range(shards)]
    ext = layout.extension(config.format)
    return {
        "card_version": CARD_VERSION,
        "created_at": time.time(),
        "output": root,
        "output_format": config.output_format,
        "encoding": {"format": config.format, "extension": ext},
        "samples": counts["ok"],
        "failed": counts["failed"],
        "styles_per_image": config.styles_per_image,
        "classes": names,
        "samples_per_class": counts["labels"],
        "samples_per_style": counts["styles"],
        "style_pool": style_pool(config, list(counts["styles"])),
        "stylizer": config.stylizer,
        "weights": {"files": weights, "sha256": weights_sha256},
        "alpha": config.alpha,
        "pixel_settings": generations.pixel_settings(config),
        "seeds": {"seed": config.seed, "style_seed": config.style_seed},
        "manifest": config.manifest,
        "generation": generation,
        "shard_files": shard_files,
        "load": loading(config.output_format, root, generation, shards, names is not None, ext),
    }


def card_readme(card: dict[str, Any]) -> str:
    """The card as a short README.md."""
    pool = card["style_pool"]
    settings = ", ".join(f"{k}={v}" for k, v in card["pixel_settings"].items() if v is not None)
    lines = [
        "# Stylized dataset",
        "",
        f"{card['samples']} samples ({card['failed']} failed rows) in `{card['output_format']}` form, "
        f"{card['styles_per_image']} style(s) per photo, encoded as {card['encoding']['format']}.",
        "",
        f"- Stylizer: `{card['stylizer']}`, weights sha256 `{card['weights']['sha256']}`, alpha {card['alpha']}",
        f"- Style pool: {pool['size']} styles from `{pool['source']}`"
        + (f" (split `{pool['split']}`)" if pool["split"] else "")
        + f", fingerprint `{pool['fingerprint']}`",
        f"- Seeds: seed {card['seeds']['seed']}, style_seed {card['seeds']['style_seed']}",
        f"- Pixel settings: {settings}",
        f"- Manifest: `{card['manifest']}` (generation {card['generation']})",
    ]
    if card["classes"]:
        per_class = card["samples_per_class"] or {}
        lines += ["", "| class | index | samples |", "|---|---|---|"]
        lines += [f"| {name} | {i} | {per_class.get(name, 0)} |" for i, name in enumerate(card["classes"])]
    styles = card["samples_per_style"]
    lines += ["", f"Samples per style: {len(styles)} styles, between {min(styles.values(), default=0)} and "]
    lines[-1] += f"{max(styles.values(), default=0)} samples each (all counts in dataset.json)."
    lines += ["", "## Loading", "", "```python", card["load"], "```", ""]
    return "\n".join(lines)


def write_card(storage: Storage, card: dict[str, Any]) -> None:
    storage.put(layout.CARD_KEY, json.dumps(card, indent=2, sort_keys=True).encode())
    storage.put(layout.CARD_README_KEY, card_readme(card).encode())


__all__ = ["build_card", "card_readme", "count_rows", "pool_fingerprint", "write_card"]
