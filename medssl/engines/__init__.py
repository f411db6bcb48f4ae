"""Training-loop glue around PyTorch Lightning: data modules, callbacks, checkpoints, runs."""
