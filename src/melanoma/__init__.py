"""Melanoma classifier: dermoscopy image -> calibrated probability of malignancy, with Grad-CAM."""

__version__ = "0.1.0"
