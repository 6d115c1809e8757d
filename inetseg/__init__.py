"""inetseg: pixel-wise semantic segmentation learned from Internet images with no human labels."""
__version__ = "0.1.0"
