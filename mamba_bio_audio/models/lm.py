"""The causal language model: backbone + LM head (tied to the embedding by default)."""

import torch
import torch.nn as nn

from ..errors import ConfigError
from .. import generation
from .backbone import MambaBackbone
from .pretrained import PretrainedModel, init_weights


class MambaLM(PretrainedModel):
    """Next-token prediction over DNA tokens or mu-law audio samples.

    Args:
        config: a MambaConfig (bidirectional must be False).
    Shape:
        forward: (b, L) int -> logits (b, L, vocab_size);  step: (b,) int -> (b, vocab_size)
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

    def forward(self, ids: torch.Tensor, state=None) -> torch.Tensor:
        """Args:
            ids: (b, L) token ids.
            state: optional state from `allocate_state`, advanced to the end of ids.
        Returns:
            logits (b, L, vocab_size) (the padding rows of the vocabulary are dropped).
        """
        hidden = self.backbone(ids, state)  # (b, L, d)
        return self.lm_head(hidden)[..., : self.config.vocab_size]

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
