"""k-means (learning, applying, saving) and label-quality metrics."""
