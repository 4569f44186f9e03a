"""Pretraining: the loss, and (to come) data loading, optimisation and checkpoints."""
