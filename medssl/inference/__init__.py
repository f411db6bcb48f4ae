"""Inference: loading trained methods, sliding-window prediction with uncertainty, exports."""
