"""Confusion matrices: the one of a k-nearest-neighbour vote in code space, and which class pairs a
confusion matrix says are most often mistaken for each other."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

#: Codes compared with all others at a time: the whole test split at once would hold a 5,000 x 5,000 distance matrix.
CHUNK = 1000


def knn_confusion(
    train_codes: Tensor, train_labels: Tensor, test_codes: Tensor, test_labels: Tensor, k: int, num_classes: int
) -> Tensor:
    """Confusion counts (rows: true class, columns: predicted) of a k-nearest-neighbour majority vote
    in code space, Euclidean. A tied vote goes to the class whose votes are nearer (smaller sum of
    neighbour ranks), then to the lower class index: the same vote on every machine."""
    k = min(k, len(train_codes))
    nearer_first = torch.arange(k, 0, -1)
    # one vote weighs more than all rank tie-breakers together (at most k(k+1)/2): exact, in integers
    vote = k * (k + 1) + nearer_first
    predicted = []
    for chunk in test_codes.split(CHUNK):
        distances = torch.cdist(chunk, train_codes, compute_mode="donot_use_mm_for_euclid_dist")
        neighbour_labels = train_labels[distances.topk(k, dim=1, largest=False).indices]
        votes = torch.zeros(len(chunk), num_classes, dtype=torch.int64).scatter_add_(
            1, neighbour_labels, vote.expand_as(neighbour_labels)
        )
        predicted.append(votes.argmax(1))
    cells = test_labels * num_classes + torch.cat(predicted)
    return torch.bincount(cells, minlength=num_classes**2).view(num_classes, num_classes)


def most_confused_pairs(confusion: Tensor, class_names: Sequence[str], top: int = 5) -> list[list[Any]]:
    """The class pairs most often mistaken for each other, both directions counted:
    ``[[name_i, name_j, count], ...]``, most confused first, pairs never confused left out."""
    both_ways = (confusion + confusion.T).triu(diagonal=1).flatten()
    order = both_ways.argsort(descending=True, stable=True)[:top]
    num_classes = len(confusion)
    return [
        [class_names[i // num_classes], class_names[i % num_classes], int(both_ways[i])]
        for i in order.tolist()
        if both_ways[i] > 0
    ]
