"""Transforms: invertible views of 3D patches (:mod:`medssl.transforms.umct_views`) and SSL augmentations.

Import from the submodules (``from medssl.transforms.umct_views import make_views``); this package
module imports nothing, so importing one transform never pulls in the others' dependencies.
"""
