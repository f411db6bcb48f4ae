"""napari-medssl: review, correct and send back the pseudo-labels of ``medssl pseudo-label``.

The logic is in pure modules without Qt (:mod:`.session` is the review API a script can drive:
queue, decisions, drafts, log); :mod:`._widget` and :mod:`._reader` are the napari side.
"""

__version__ = "0.1.0"
