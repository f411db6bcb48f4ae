"""The MedMNIST SSL benchmark wing, in the manner of MONAI's ``apps/`` sub-packages.

* ``config``: the typed recipe of ``medssl eval medmnist``;
* ``files`` (official table, paths, md5 records in the cache folder, downloads) and ``data``
  (splits as whole uint8 tensors, the summary ``medssl data medmnist`` prints); ``channels``;
* ``run``: :func:`~medssl.medmnist.run.run_medmnist_eval`, the entry point, over ``plan`` (keys,
  settings hashes covering the code's resolved defaults, resume), ``backbone_provider`` (pretrained /
  loaded / random backbones, one per pretraining seed), ``features`` (feature extraction and its
  cache files), ``ood_step`` and ``transfer``; ``progress`` (bars or periodic lines) and
  ``provenance`` (the code version stamped on results);
* the protocols: ``subsample`` (class-balanced label subsets), ``protocols`` (linear probe and kNN,
  selected on validation), ``finetune``; ``metrics`` (MedMNIST's ACC / AUROC), ``ood`` (scores and
  their metrics, near / far OOD), ``report`` (results files, markdown + PNG report, which variance
  each interval covers).

The image-level SSL pretraining it evaluates lives in ``medssl.engines.image_ssl`` and
``medssl.methods.image_ssl``.
"""
