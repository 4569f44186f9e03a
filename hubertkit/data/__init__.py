"""Manifests, audio reading, labels and dictionaries."""
