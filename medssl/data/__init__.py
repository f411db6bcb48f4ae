"""Data layer: reading/writing volumes with their geometry, DICOM series, caches, datasets."""
