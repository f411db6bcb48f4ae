"""``medssl data info DIR`` on a dataset folder: what it declares and what its first case holds.

A summary a user checks before training: channels (name per channel, and each channel file's grid
and intensity range for the first training case), labels, and the number of cases per split.
The full per-case check is :func:`medssl.data.check.check_dataset`.
"""

from __future__ import annotations

from pathlib import Path

from medssl.data.dataset import SPLIT_FOLDERS, read_dataset_json, scan_cases


def dataset_info(root: str | Path) -> dict:
    """A JSON-able summary of a dataset folder.

    Returns:
        ``{"path", "name", "channels": [{"index", "name", "file", "shape", "spacing", "dtype",
        "min", "max"}], "labels", "cases": {split: n}, "channel_faults": n}``; the per-file fields
        come from the first complete training case (absent when there is none).
    """
    from medssl.data.io import read_volume
    from medssl.data.volume import volume_info

    root = Path(root)
    spec = read_dataset_json(root)
    counts, faults, first = {}, 0, None
    for split in SPLIT_FOLDERS:
        cases, bad = scan_cases(root, split, spec)
        counts[split], faults = len(cases), faults + len(bad)
        if first is None and split == "train" and cases:
            first = cases[0]
    channels = [{"index": k, "name": name} for k, name in enumerate(spec.modalities)]
    if first is not None:
        for ch, path in zip(channels, first.images):
            info = volume_info(read_volume(path))
            ch.update(file=str(path.relative_to(root)), shape=info["shape"], spacing=info["spacing"],
                      dtype=info["dtype"], min=info["min"], max=info["max"])
    return {"path": str(root), "name": spec.name, "channels": channels, "labels": dict(spec.labels),
            "cases": counts, "channel_faults": faults}


def format_dataset_info(info: dict) -> str:
    """The human-readable lines of :func:`dataset_info`."""
    fmt = lambda v: " x ".join(f"{x:.4g}" for x in v)  # noqa: E731
    lines = [f"dataset      {info['path']} ({info['name']})",
             f"channels     {len(info['channels'])}"]
    for ch in info["channels"]:
        line = f"  {ch['index']}: {ch['name']}"
        if "file" in ch:
            line += (f"   {ch['file']}: {fmt(ch['shape'])} voxels of {fmt(ch['spacing'])} mm, {ch['dtype']}, "
                     f"range {ch['min']:.6g} .. {ch['max']:.6g}")
        lines.append(line)
    lines.append("labels       " + ", ".join(f"{k}={v}" for k, v in info["labels"].items()))
    lines.append("cases        " + ", ".join(f"{s} {n}" for s, n in info["cases"].items() if n))
    if info["channel_faults"]:
        lines.append(f"faults       {info['channel_faults']} case(s) with missing or extra channel files "
                     "(`medssl data check` lists them)")
    return "\n".join(lines)
