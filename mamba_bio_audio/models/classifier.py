"""The sequence classifier: backbone, masked pooling, linear head."""

import dataclasses

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..modules.pooling import masked_pool
from .backbone import MambaBackbone
from .pretrained import PretrainedModel, init_weights


class MambaClassifier(PretrainedModel):
    """Classify whole sequences (species, labeled regions, audio clips).

    Args:
        config: a MambaConfig with n_classes >= 1; `pooling` is mean, last or max (padding is
            ignored), `class_names` optional. With config.rc_equivariant the pooled features of
            the two strands are averaged (the reverse strand's channels flipped back) before
            the head, so the logits of RC(x) equal those of x by construction.
    Shape:
        forward: (b, L) int, or (b, L, input_dim) float with config.input_dim > 0
            [, mask (b, L) bool] -> logits (b, n_classes)
    """

    model_type = "MambaClassifier"

    def __init__(self, config):
        super().__init__(config)
        if config.n_classes < 1:
            raise ConfigError(f"model.n_classes={config.n_classes}: a classifier needs at least "
                              "one class")
        self.backbone = MambaBackbone(config)
        self.head = nn.Linear(config.d_model, config.n_classes)
        init_weights(self, config)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor = None) -> torch.Tensor:
        """Args:
            ids: (b, L) token ids, or (b, L, input_dim) float features (config.input_dim > 0).
            mask: (b, L) bool, True at real tokens; None when nothing is padded.
        Returns:
            logits (b, n_classes)
        """
        hidden = self.backbone(ids, mask=mask)  # (b, L, d), or (b, L, 2d) for both strands
        pooled = masked_pool(hidden, mask, self.config.pooling)
        if self.config.rc_equivariant:  # RC(x) swaps the halves and flips their channels
            d = self.config.d_model
            pooled = (pooled[:, :d] + pooled[:, d:].flip(-1)) / 2  # (b, d)
        return self.head(pooled)

    @classmethod
    def from_lm(cls, lm, n_classes: int, pooling: str = "mean", class_names=None, **changes):
        """A classifier on a pretrained LM's backbone (copied), with a fresh head.

        Args:
            lm: a MambaLM.
            n_classes: number of classes.
            pooling: "mean", "last" or "max".
            class_names: optional list of n_classes names, saved with the model.
            changes: other MambaConfig fields to change that keep the weights' shapes, e.g.
                rc_equivariant=True and complement=[...] (a plain LM's weights fit an
                RC-equivariant model of the same size).
        """
        config = dataclasses.replace(lm.config, n_classes=n_classes, pooling=pooling,
                                     class_names=None if class_names is None else list(class_names),
                                     **changes)
        model = cls(config).to(lm.lm_head.weight.device)
        model.backbone.load_state_dict(lm.backbone.state_dict())
        return model
