"""Segmentation training methods. An explicit registry: ``method: <name>`` in a config picks one.

Adding a method is one file (a :class:`~medssl.methods.base.MedsslModule` subclass that declares
what it needs and builds itself with ``from_config``) plus one line here. Image-level SSL methods
(SimCLR, BYOL, ... for the MedMNIST benchmark) have their own registry in
:mod:`medssl.methods.image_ssl`.
"""

from __future__ import annotations

#: method name -> "module:Class" (imported lazily so the registry costs nothing at CLI start-up)
METHODS: dict[str, str] = {
    "supervised": "medssl.methods.supervised:SupervisedSegmentation",
    "supervised_2d": "medssl.methods.supervised_2d:SliceSupervised",
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


def build_method(cfg, spec):
    """The method named by ``cfg.method``, with its network, from a typed run config
    (:class:`~medssl.config.RunConfig`) and the dataset's :class:`~medssl.data.dataset.DatasetSpec`."""
    return get_method(cfg.method).from_config(cfg, spec)
