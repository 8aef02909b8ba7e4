"""The causal language model: backbone + LM head (tied to the embedding by default)."""

import torch
import torch.nn as nn

from ..errors import ConfigError
from .. import generation
from .backbone import MambaBackbone
from .pretrained import PretrainedModel, init_weights


class MambaLM(PretrainedModel):
    """Next-token prediction over DNA tokens or mu-law audio samples.

    With config.rc_equivariant (DNA): the backbone reads both strands with shared weights and the
    model has two heads on the tied output layer: next-base logits from the forward strand (what
    `forward`, `step` and generation use) and previous-base logits from the reverse strand, the
    vocabulary mapped through `complement`. By construction

        forward(RC(x), both_strands=True) == forward(x, both_strands=True)
                                              .flip(1).flip(2)[..., complement]

    i.e. the next-base distribution for RC(x) at t is the complement-mapped previous-base
    distribution for x at L-1-t. A causal next-base head alone cannot be RC-equivariant: its
    output at t would have to depend only on x[:t+1] and, through the identity, only on x[t:],
    so only on x[t]. Training (`lm_loss`) scores both heads, i.e. both strands of every window.

    Args:
        config: a MambaConfig (bidirectional must be False).
    Shape:
        forward: (b, L) int -> logits (b, L, vocab_size) ((b, L, 2, vocab_size) with
            both_strands: [..., 0, :] next base, [..., 1, :] previous base);
        step: (b,) int -> (b, vocab_size)
    """

    model_type = "MambaLM"

    def __init__(self, config):
        super().__init__(config)
        if config.bidirectional:
            raise ConfigError("model.bidirectional=True: a language model must be causal; "
                              "use bidirectional backbones for classifiers")
        if config.input_dim > 0:
            raise ConfigError(f"model.input_dim={config.input_dim}: a language model reads and "
                              "predicts token ids; float features (input_dim > 0) are for "
                              "classifiers")
        self.backbone = MambaBackbone(config)
        self.lm_head = nn.Linear(config.d_model, config.padded_vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.backbone.embedding.weight
        init_weights(self, config)

    @classmethod
    def from_pretrained(cls, directory, device="cpu", vocab_size: int = None):
        """Build the model from a checkpoint folder: ours (`save_pretrained`), or a Hugging Face
        MambaForCausalLM or mamba_ssm MambaLMHeadModel folder, converted in memory (`convert`).

        Args:
            vocab_size: other formats only: the number of token ids in use when fewer than the
                vocabulary's rows (a tokenizer's size; the logits then stop there).
        """
        from .convert import checkpoint_format, foreign_lm

        if checkpoint_format(directory) in (None, "ours"):
            return super().from_pretrained(directory, device)
        return foreign_lm(directory, vocab_size).to(device)

    def forward(self, ids: torch.Tensor, state=None, both_strands: bool = False) -> torch.Tensor:
        """Args:
            ids: (b, L) token ids.
            state: optional state from `allocate_state`, advanced to the end of ids.
            both_strands: config.rc_equivariant only: also the previous-base logits (see the
                class docstring).
        Returns:
            logits (b, L, vocab_size) (the padding rows of the vocabulary are dropped), or
            (b, L, 2, vocab_size) with both_strands.
        """
        V = self.config.vocab_size
        if not both_strands:
            return self.lm_head(self.backbone.forward_strand(ids, state))[..., :V]
        if not self.config.rc_equivariant or state is not None:
            raise ValueError("both_strands=True needs an RC-equivariant model "
                             "(model.rc_equivariant=true) and no state")
        d = self.config.d_model
        hidden = self.backbone(ids)  # (b, L, 2d)
        nxt = self.lm_head(hidden[..., :d])[..., :V]
        prev = self.lm_head(hidden[..., d:].flip(-1))[..., :V][..., self.backbone.complement]
        return torch.stack([nxt, prev], dim=2)

    def allocate_state(self, batch_size: int, device=None):
        """Zero recurrent state for `batch_size` sequences; its size does not depend on length."""
        return self.backbone.allocate_state(batch_size, device)

    def step(self, ids: torch.Tensor, state) -> torch.Tensor:
        """One token per sequence: ids (b,) -> logits (b, vocab_size); `state` updated in place."""
        return self.lm_head(self.backbone.step(ids, state))[..., : self.config.vocab_size]

    def generate(self, prompt_ids, max_new_tokens: int, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0, seed: int = None, callback=None,
                 cuda_graph: bool = None) -> torch.Tensor:
        """Sample a continuation; see `mamba_bio_audio.generation.generate`."""
        return generation.generate(self, prompt_ids, max_new_tokens, temperature, top_k, top_p,
                                   seed, callback, cuda_graph)
