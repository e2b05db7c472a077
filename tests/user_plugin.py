"""A user's plug-in module (``--plugin user_plugin``, a study's ``plugins``): one backbone that
claims to be the paper's (it is not), and one optimizer by the class decorator."""

import torch
from torch import nn

from bocb.optim import optimizer
from bocb.zoo import register_backbone


@register_backbone("user_tiny_net", short="UTN", group="classical CNN", stages="plain", block="conv",
                   token_mixer="conv", residual_norm="none", paper=True, cifar_stem="none needed")
def user_tiny_net(num_classes, policy, scale, drop_path_rate):
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, num_classes))


@optimizer("user_sgd", short="USGD", category="a", lr=0.05, weight_decay=5e-4, paper=True)
class UserSGD(torch.optim.SGD):
    """SGD with momentum 0.9, as a user would subclass it."""

    def __init__(self, params, lr=0.05, weight_decay=0.0, momentum=0.9):
        super().__init__(params, lr=lr, weight_decay=weight_decay, momentum=momentum)
