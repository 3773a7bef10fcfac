"""Training-time data engine: augmentation and synthetic images from label maps."""
