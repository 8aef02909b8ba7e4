"""The backbone: input layer (token embedding, or a Linear projection of float features), a body
of Mamba blocks (isotropic stack or U-Net), final norm."""

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..modules import context_parallel
from ..modules.block import Stack
from ..modules.mixer import reverse_index
from ..modules.norm import RMSNorm
from .unet import UNet


class MambaBackbone(nn.Module):
    """ids -> hidden states, in parallel mode (`forward`) or one step at a time (`step`).

    Isotropic: n_layer blocks of width d_model (the DNA models). U-Net: see `unet.UNet` (the audio
    models). Both are causal unless config.bidirectional.

    The input layer is `embedding` (token ids, config.input_dim == 0) or `input_proj` (a Linear
    from config.input_dim float features to d_model, e.g. log-mel frames); the model has one of
    the two, never both.

    Reverse-complement parameter sharing (config.rc_equivariant, Caduceus "PS"): `forward` runs
    the body on x and on RC(x) (one batch of 2b, the same weights) and returns (b, L, 2 * d_model):
    channels [:d] the strand read forward, channels [d:] the reverse strand's hidden states put
    back in x's coordinates (positions reversed, channels flipped). So for every x, by
    construction,

        forward(RC(x)) == forward(x).flip(1).flip(2)      (positions of real tokens only)

    With a causal body the first half at t has read x[:t+1] and the second half x[t:] (the
    reverse strand read causally). `step`, and `forward` with a state, run the forward strand
    alone (what generation needs).

    Args:
        config: a MambaConfig.
    Shape:
        forward: (b, L) int, or (b, L, input_dim) float -> (b, L, d_model)
            ((b, L, 2 * d_model) with config.rc_equivariant and no state);
        step: (b,) int, or (b, input_dim) float -> (b, d_model)
    """

    def __init__(self, config):
        super().__init__()
        self.config = config
        if config.input_dim > 0:
            self.input_proj = nn.Linear(config.input_dim, config.d_model)
        else:
            self.embedding = nn.Embedding(config.padded_vocab_size, config.d_model)
        if config.backbone == "unet":
            self.body = UNet(config)
        else:
            self.body = Stack(config, config.d_model, config.n_layer)
        self.norm_f = RMSNorm(config.d_model, config.norm_eps)
        if config.rc_equivariant:
            if config.complement is None:
                raise ConfigError("model.rc_equivariant=true needs model.complement, the id of "
                                  "each token's complement (DNATokenizer.complement_ids)")
            # not in the state dict: the weights are those of a plain model
            self.register_buffer("complement", torch.tensor(config.complement), persistent=False)

    def forward(self, ids: torch.Tensor, state=None, mask: torch.Tensor = None) -> torch.Tensor:
        """Args:
            ids: (b, L) token ids, or (b, L, input_dim) float features when config.input_dim > 0.
                For the U-Net, L must be a multiple of prod(unet_pool).
            state: optional recurrent state from `allocate_state` to start from; it is left at the
                end of the sequence (used to prime generation with the parallel forward).
            mask: optional (b, L) bool, True at real tokens; a bidirectional backbone then
                reverses only the real tokens. Pad on the right: then no real token reads
                padding, in either direction (a causal backbone needs no mask for that).
        Returns:
            (b, L, d_model) hidden states (fp32 with residual_in_fp32); (b, L, 2 * d_model) for
            both strands with config.rc_equivariant and no state (see the class docstring).
        """
        if self.config.rc_equivariant and state is None:
            return self._both_strands(ids, mask)
        return self.forward_strand(ids, state, mask)

    def forward_strand(self, ids: torch.Tensor, state=None, mask: torch.Tensor = None
                       ) -> torch.Tensor:
        """The body on the input as read (no reverse complement): (b, L) -> (b, L, d_model);
        arguments as `forward`."""
        x = self.embed(ids, step=False)  # (b, L, d)
        P = self.config.pool_product
        if ids.shape[1] % P:
            raise ConfigError(f"input length {ids.shape[1]} is not a multiple of the U-Net pooling "
                              f"product {P} (unet_pool={self.config.unet_pool}); use a sequence "
                              f"length that is a multiple of {P}")
        if state is not None and P > 1 and state.pos % P:
            raise ValueError(f"the U-Net state is at position {state.pos}, inside a pooling window "
                             f"of {P}; step to a multiple of {P} before a parallel forward")
        if self.config.bidirectional:
            x = self.body(x, None, None if mask is None else reverse_index(mask))
        else:
            x = self.body(x, state)
        return self.norm_f(x)

    def _both_strands(self, ids: torch.Tensor, mask: torch.Tensor = None) -> torch.Tensor:
        """(b, L) ids -> (b, L, 2d): the forward strand, then the reverse strand in x's
        coordinates (see the class docstring)."""
        if context_parallel.active() is not None:
            raise ConfigError("model.rc_equivariant=true under context parallelism: the reverse "
                              "strand needs the whole sequence on one rank")
        if ids.dim() != 2 or ids.is_floating_point():
            self.embed(ids)  # raises the ValueError that names the expected input
        rc = reverse_strand(self.complement[ids], mask)  # (b, L), padding stays in place
        both_mask = None if mask is None else torch.cat([mask, mask])
        h = self.forward_strand(torch.cat([ids, rc]), mask=both_mask)  # (2b, L, d)
        fwd, rev = h.chunk(2)
        return torch.cat([fwd, reverse_strand(rev, mask).flip(-1)], dim=-1)

    def step(self, ids: torch.Tensor, state) -> torch.Tensor:
        """One time step: ids (b,) or features (b, input_dim) -> (b, d_model); `state` is updated
        in place."""
        return self.norm_f(self.body.step(self.embed(ids, step=True), state))

    def embed(self, ids: torch.Tensor, step: bool = False) -> torch.Tensor:
        """The input layer: ids (b, L) -> (b, L, d), or features (b, L, input_dim) -> (b, L, d)
        (one dimension fewer each when `step`). ValueError names the expected input otherwise."""
        k = self.config.input_dim
        dims = "(batch,)" if step else "(batch, length)"
        if k > 0:
            want = f"(batch, {k})" if step else f"(batch, length, {k})"
            if ids.dim() != (2 if step else 3) or ids.shape[-1] != k or not ids.is_floating_point():
                raise ValueError(f"the model reads {k} float features per position "
                                 f"(model.input_dim={k}): expected a float tensor of shape "
                                 f"{want}, got {ids.dtype} {tuple(ids.shape)}")
            return self.input_proj(ids.to(self.input_proj.weight.dtype))
        if ids.dim() != (1 if step else 2) or ids.is_floating_point():
            hint = (" (float features need a model with model.input_dim > 0)"
                    if ids.is_floating_point() else "")
            raise ValueError(f"ids: expected integer token ids of shape {dims}, got {ids.dtype} "
                             f"{tuple(ids.shape)}{hint}")
        return self.embedding(ids)

    def set_position(self, state, position: int) -> None:
        """Set the U-Net's step counters as after `position` steps (isotropic: nothing to do)."""
        if isinstance(self.body, UNet):
            self.body.set_position(state, position)

    def allocate_state(self, batch_size: int, device=None):
        """Zero recurrent state (fp32, constant size) for `batch_size` sequences."""
        if self.config.bidirectional:
            raise ValueError("a bidirectional backbone has no recurrent mode")
        return self.body.allocate_state(batch_size, device or self.norm_f.weight.device)


def reverse_strand(x: torch.Tensor, mask: torch.Tensor = None) -> torch.Tensor:
    """Reverse the positions of the real tokens of each row (padding stays where it is).

    Args:
        x: (b, L) or (b, L, d).
        mask: (b, L) bool, True at real tokens (one contiguous run per row); None: all real.
    Returns:
        x with dim 1 permuted; applying it twice gives x back.
    """
    if mask is None:
        return x.flip(1)
    idx = reverse_index(mask)  # (b, L)
    if x.dim() == 3:
        idx = idx.unsqueeze(-1).expand_as(x)
    return x.gather(1, idx)
