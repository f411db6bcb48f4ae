"""A predicted label volume as a DICOM Segmentation (DICOM-SEG) referencing its source series.

Written with highdicom (an optional dependency, ``pip install medssl[dicom]``, imported here
only): it builds the Segmentation IOD from the source images' headers (patient, study and frame
of reference modules copied, ReferencedSeriesSequence / SourceImageSequence pointing at the
source instances, per-frame plane positions) and checks it against the standard. Writing that
IOD by hand with pydicom is what produced the flipped and misplaced SEGs other tools were
reported for, so this module only maps medssl's arrays onto highdicom's frames:

* the volume's slice ``z`` is the frame of the source image read at ``z``
  (:class:`~medssl.data.dicom_tolerant.SeriesRead`; slices filled in for missing images get no
  frame, as there is no source image to reference);
* a frame is ``label[:, :, z].T`` (rows, columns), since medssl arrays are ``(x, y, z)`` =
  (column, row, slice);
* one segment per foreground class (segment number = class index), BINARY, AUTOMATIC, with the
  class name as label and as the meaning of a medssl-private code (scheme ``99MEDSSL``): medssl
  does not know which anatomy a trained class is, so it claims no SNOMED concept for it.

The SEG carries the patient module of its source images (it belongs to that patient); nothing of
it goes into medssl's logs or JSON.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from medssl.errors import DataError

__all__ = ["REQUIRED_UIDS", "dicom_seg_blocker", "write_dicom_seg"]

#: What a source image needs for a SEG to reference it.
REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")


def dicom_seg_blocker(headers: Sequence) -> str | None:
    """Why no DICOM-SEG can reference these source images (one line), or ``None``."""
    missing = [k for k in REQUIRED_UIDS if not all(str(h.get(k) or "").strip() for h in headers)]
    if missing:
        return (f"no DICOM-SEG written: the source images have no {', '.join(missing)} (an anonymised export?), so "
                "a segmentation cannot reference them; the NIfTI segmentation is written")
    return None


def write_dicom_seg(
    dest: str | Path,
    label: np.ndarray,
    series,
    class_names: Sequence[str],
    software_version: str,
    series_description: str = "medssl segmentation",
) -> Path:
    """Write ``label`` as a DICOM-SEG referencing the series it was predicted from, atomically.

    Args:
        dest: the ``.dcm`` file.
        label: ``(X, Y, Z)`` uint8 class indices on the grid of ``series.volume``.
        series: the :class:`~medssl.data.dicom_tolerant.SeriesRead` of the input.
        class_names: names of the classes, index 0 the background (no segment).
        software_version: written as SoftwareVersions.
        series_description: the SEG's SeriesDescription.

    Raises:
        DataError: the source images lack the UIDs a reference needs (:func:`dicom_seg_blocker`).
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from medssl.core.atomic import write_atomic

    blocker = dicom_seg_blocker(series.headers)
    if blocker:
        raise DataError(blocker)
    if label.shape != series.volume.shape:
        raise ValueError(f"label shape {label.shape} differs from the series' {series.volume.shape}")
    frames = np.stack([np.ascontiguousarray(label[:, :, z].T) for z in series.slice_index]).astype(np.uint8)
    algorithm = hd.AlgorithmIdentificationSequence(
        name="medssl", family=codes.cid7162.ArtificialIntelligence, version=software_version)
    segments = [
        hd.seg.SegmentDescription(
            segment_number=k,
            segment_label=name[:64],
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=hd.sr.CodedConcept(value=f"class{k}", scheme_designator="99MEDSSL", meaning=name[:64]),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for k, name in enumerate(class_names) if k > 0
    ]
    sources = [_clean_source(h) for h in series.headers]
    with warnings.catch_warnings():
        # highdicom warns about odd source values (e.g. a PatientName not in the Person Name form),
        # quoting them: patient data must not reach the logs
        warnings.simplefilter("ignore")
        seg = _segmentation(hd, sources, frames, segments, software_version, series_description)
    return write_atomic(dest, lambda fh: seg.save_as(fh, enforce_file_format=True))


def _clean_source(header):
    """A copy of a source header without empty elements highdicom copies but refuses
    (an empty SpecificCharacterSet: the default repertoire, same meaning as absent)."""
    import copy

    h = copy.copy(header)
    if "SpecificCharacterSet" in h and not str(h.SpecificCharacterSet or "").strip():
        del h.SpecificCharacterSet
    return h


def _segmentation(hd, sources, frames, segments, software_version, series_description):
    return hd.seg.Segmentation(
        source_images=sources,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segments,
        series_instance_uid=hd.UID(),
        series_number=900,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="medssl",
        manufacturer_model_name="medssl infer",
        software_versions=software_version,
        device_serial_number="0",
        series_description=series_description,
        omit_empty_frames=False,  # every source slice keeps its frame: an empty slice is a finding too
    )
