"""medssl: semi- and self-supervised learning for 3D medical imaging with scarce labels.

Kept import-light on purpose: ``import medssl`` must not import torch or MONAI, so that
``medssl --help`` answers instantly.
"""

__version__ = "0.1.0"

from medssl.errors import MedsslError  # noqa: E402  (light: no third-party imports)

__all__ = ["MedsslError", "__version__"]
