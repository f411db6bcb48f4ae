"""Transforms: invertible views of 3D patches (:mod:`medssl.transforms.views`) and SSL augmentations.

Import from the submodules (``from medssl.transforms.views import make_views``); this package
module imports nothing, so importing one transform never pulls in the others' dependencies.
"""
