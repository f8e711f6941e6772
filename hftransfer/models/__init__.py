"""Models: checkpoints loaded as classifiers (text and image), pooling, layer layouts, students, and the
modality seam (`tasks`: what text and image runs load, prepare, collate and export)."""
