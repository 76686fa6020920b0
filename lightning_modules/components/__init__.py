"""Reusable parts of the experiments: networks, losses and the adversarial training step."""
