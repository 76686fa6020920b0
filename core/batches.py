"""What a minibatch group is, the one shape of training batch that both the data and the models
must agree on: the datamodules hand it out (``data.minibatches_per_step > 1``), the models that
accept it unpack it, and neither layer may import the other, so the definition lives below both."""

from __future__ import annotations


def is_minibatch_group(batch) -> bool:
    """Whether a training batch is a group of minibatches (a list of ``(inputs, labels)`` pairs, from
    ``minibatches_per_step > 1``) rather than one ``(inputs, labels)`` minibatch."""
    return isinstance(batch, list) and isinstance(batch[0], (tuple, list))
