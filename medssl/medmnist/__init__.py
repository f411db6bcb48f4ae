"""The MedMNIST SSL benchmark wing, in the manner of MONAI's ``apps/`` sub-packages: its config,
data files, run planner, protocols, OOD detection, subsampling, metrics and report."""
