"""Backbones a user would write, named ``user_models:NAME`` by tests/test_external_models.py."""

from torch import nn


def tiny_cnn(num_classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(16, num_classes),
    )


def not_a_model(num_classes: int) -> str:
    return "a string"


NOT_CALLABLE = 3


def no_num_classes(width: int) -> nn.Module:  # a builder that does not take num_classes
    return nn.Linear(width, 10)
