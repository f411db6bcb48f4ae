"""Training methods. An explicit registry: ``method: <name>`` in a config picks one."""

from __future__ import annotations

#: method name -> "module:Class" (imported lazily so the registry costs nothing at CLI start-up)
METHODS: dict[str, str] = {
    "supervised": "medssl.methods.supervised:SupervisedSegmentation",
    "umct": "medssl.methods.umct:UMCT",
    "contrastive": "medssl.methods.contrastive:ContrastivePretraining",
}


def get_method(name: str):
    """The method class registered under ``name``."""
    import importlib

    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; available: {sorted(METHODS)}")
    module, cls = METHODS[name].split(":")
    return getattr(importlib.import_module(module), cls)
