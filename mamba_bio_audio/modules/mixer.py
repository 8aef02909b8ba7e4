"""The Mamba mixer (S6 selective state space layer) in parallel and recurrent mode.

    x, z = in_proj(u)                         two branches of width d_inner = expand * d_model
    x = silu(causal depthwise conv1d(x))
    dt, B, C = x_proj(x)                      selection: functions of the input
    dt = dt_proj(dt)                          rank dt_rank -> d_inner; bias added inside the scan
    y = selective_scan(x, dt, A, B, C, D, z)  A = -exp(A_log), (d_inner, d_state)
    out = out_proj(y)

where Δ = softplus(dt + bias), h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t x_t and
y_t = (C_t h_t + D x_t) * silu(z_t).

`selective=False` is the LTI ablation (S4D-like): Δ, B, C are learned parameters that do not
depend on the input (Δ one per channel; B, C of size d_state shared by the channels, as the
selective B_t, C_t are). `bidirectional=True` adds a second SSM branch that runs on the reversed
sequence; both branches share in_proj and out_proj and their outputs are added.

Initialisation follows mamba_ssm: Δ bias = softplus⁻¹ of a log-uniform draw in [dt_min, dt_max]
(floored at dt_init_floor, flagged `_no_reinit`), A_log = log(1..N) in fp32, D = 1; A_log and D
are flagged `_no_weight_decay`.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..kernels import selective_scan, selective_state_update
from . import context_parallel


def reverse_index(mask: torch.Tensor) -> torch.Tensor:
    """Positions in the order a reversed scan reads them, reversing only the real tokens.

    Args:
        mask: (b, l) bool, True at real tokens, which form one contiguous run per row (left or
            right padding).
    Returns:
        (b, l) int64 permutation (its own inverse): real positions reversed, padding in place.
    """
    b, L = mask.shape
    t = torch.arange(L, device=mask.device).expand(b, L)
    first = mask.int().argmax(1, keepdim=True)  # (b, 1)
    last = L - 1 - mask.flip(1).int().argmax(1, keepdim=True)  # (b, 1)
    return torch.where(mask.bool(), first + last - t, t)


@dataclass
class MixerState:
    """Recurrent state of one mixer (fp32).

    Attributes:
        conv: (batch, d_inner, d_conv) the last d_conv inputs of the conv, newest last.
        ssm: (batch, d_inner, d_state) the SSM hidden state h.
    """

    conv: torch.Tensor
    ssm: torch.Tensor

    def detach_(self) -> "MixerState":
        """Cut the autograd history (e.g. between chunks of truncated backprop). Returns self."""
        self.conv, self.ssm = self.conv.detach(), self.ssm.detach()
        return self


def dt_bias_init(d_inner: int, dt_min: float, dt_max: float, dt_init_floor: float) -> torch.Tensor:
    """Δ bias with softplus(bias) log-uniform in [dt_min, dt_max] (floored). Shape (d_inner,)."""
    dt = torch.exp(torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = dt.clamp(min=dt_init_floor)
    return dt + torch.log(-torch.expm1(-dt))  # inverse of softplus


def _channels_last_scan(x: torch.Tensor) -> bool:
    """Whether the scan's (b, d, l) inputs go channels-last: on CUDA (the Triton scan reads each step
    as one contiguous row, and x_proj, dt_proj and in_proj already write (b, l, .) memory, so dt,
    B, C and z need no copies and y goes to out_proj as is; docs/kernel_tuning_notes.md #8)."""
    return x.is_cuda and x.dim() == 3


class SelectiveSSM(nn.Module):
    """Conv + selective scan of one direction: (x, z) -> y, all of width d_inner.

    Args:
        config: a MambaConfig (d_state, d_conv, dt_*, conv_bias, selective).
        d_inner: channel width.
        dt_rank: rank of the Δ projection.
    """

    def __init__(self, config, d_inner: int, dt_rank: int):
        super().__init__()
        self.d_inner, self.d_state, self.d_conv = d_inner, config.d_state, config.d_conv
        self.dt_rank, self.selective = dt_rank, config.selective
        self.conv1d = nn.Conv1d(d_inner, d_inner, config.d_conv, groups=d_inner,
                                bias=config.conv_bias)
        dt_bias = dt_bias_init(d_inner, config.dt_min, config.dt_max, config.dt_init_floor)
        if self.selective:
            self.x_proj = nn.Linear(d_inner, dt_rank + 2 * self.d_state, bias=False)
            self.dt_proj = nn.Linear(dt_rank, d_inner, bias=True)
            std = dt_rank ** -0.5 * config.dt_scale
            nn.init.uniform_(self.dt_proj.weight, -std, std)
            with torch.no_grad():
                self.dt_proj.bias.copy_(dt_bias)
            self.dt_proj.bias._no_reinit = True
        else:
            self.dt_bias = nn.Parameter(dt_bias)
            self.dt_bias._no_reinit = True
            self.B = nn.Parameter(torch.ones(self.d_state))
            self.C = nn.Parameter(torch.randn(self.d_state) * self.d_state ** -0.5)
        A = torch.arange(1, self.d_state + 1, dtype=torch.float32).repeat(d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))  # (d_inner, N)
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(d_inner))
        self.D._no_weight_decay = True

    def delta_bias(self) -> torch.Tensor:
        return (self.dt_proj.bias if self.selective else self.dt_bias).float()  # (d,)

    def selection(self, x: torch.Tensor):
        """Δ (before bias and softplus), B, C for the inputs x.

        Args:
            x: (b, d, l) or (b, d) for one step.
        Returns:
            dt shaped like x; B, C of shape (b, N, l) or (b, N).
        """
        if not self.selective:
            n_extra = x.shape[2:]
            B = self.B.to(x.dtype).view(1, -1, *(1,) * len(n_extra))
            C = self.C.to(x.dtype).view(1, -1, *(1,) * len(n_extra))
            shape = (x.shape[0], self.d_state, *n_extra)
            return torch.zeros_like(x), B.expand(shape).contiguous(), C.expand(shape).contiguous()
        x_dbl = self.x_proj(x.transpose(1, -1))  # (b, l, r + 2N) or (b, r + 2N)
        dt, B, C = x_dbl.split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.linear(dt, self.dt_proj.weight).transpose(1, -1)  # (b, d, l) or (b, d)
        dt, B, C = dt, B.transpose(1, -1), C.transpose(1, -1)
        if not _channels_last_scan(x):  # the CPU scan reads time-contiguous rows fastest
            dt, B, C = dt.contiguous(), B.contiguous(), C.contiguous()
        return dt, B, C

    def forward(self, x: torch.Tensor, z: torch.Tensor, state: MixerState = None) -> torch.Tensor:
        """Parallel mode over a whole sequence.

        Args:
            x, z: (b, d, l) the conv/SSM branch and the gate branch.
            state: optional MixerState to start from; its tensors are replaced by the final states.
        Returns:
            y: (b, d, l)
        """
        L = x.shape[-1]
        cp = context_parallel.active() if state is None else None
        if cp is not None:  # this rank holds a slice: the conv reads the previous slice's tail
            x_pad = torch.cat([cp.previous_tail(x, self.d_conv - 1), x], dim=-1)
        elif state is None:
            x_pad = F.pad(x, (self.d_conv - 1, 0))  # (b, d, l + k - 1)
        else:
            x_pad = torch.cat([state.conv[:, :, 1:].to(x.dtype), x], dim=-1)
        x_conv = F.conv1d(x_pad, self.conv1d.weight, self.conv1d.bias, groups=self.d_inner)
        if _channels_last_scan(x_conv):  # (b, d, l) views of (b, l, d) memory, like dt and z
            b, d, l = x_conv.shape
            out = x_conv.new_empty(b, l, d).transpose(1, 2)
            x_conv = out.copy_(F.silu(x_conv))
        else:
            x_conv = F.silu(x_conv)  # (b, d, l)
        dt, B, C = self.selection(x_conv)
        A = self.A()
        initial = None if state is None else state.ssm
        if cp is not None:  # the state entering this slice, from every slice's zero-start scan
            _, end = selective_scan(x_conv, dt, A, B, C, delta_bias=self.delta_bias(),
                                    delta_softplus=True, return_final_state=True)
            delta_sum = F.softplus(dt.float() + self.delta_bias()[:, None]).sum(-1)  # (b, d)
            initial = cp.start_state(end, torch.exp(A * delta_sum[..., None]))
        out = selective_scan(x_conv, dt, A, B, C, self.D.float(), z=z,
                             delta_bias=self.delta_bias(), delta_softplus=True,
                             initial_state=initial, return_final_state=state is not None)
        if state is None:
            return out
        y, final = out
        # fresh compact tensors: views would keep the whole sequence's buffers alive
        state.ssm = final.float().clone(memory_format=torch.contiguous_format)
        if L > 0:
            conv = x_pad[:, :, -self.d_conv:].float()  # (b, d, k)
            state.conv = conv.clone(memory_format=torch.contiguous_format)
        return y

    def A(self) -> torch.Tensor:
        """A = -exp(A_log), (d, N) float32, for the scan, held in (N, d) memory (a transposed
        view): the Triton scan reads A's transpose, which is then contiguous as it is, so a call
        makes no transposed copy (a launch and about 90 us of host time on the lent H100 machines,
        docs/benchmarks.md "2026-12-07 16:45 and 16:58")."""
        return -torch.exp(self.A_log.float().t()).t()

    def step(self, x: torch.Tensor, z: torch.Tensor, state: MixerState) -> torch.Tensor:
        """Recurrent mode: one time step; `state` is updated in place.

        Args:
            x, z: (b, d)
        Returns:
            y: (b, d)
        """
        conv = state.conv
        conv.copy_(torch.roll(conv, shifts=-1, dims=-1))
        conv[:, :, -1] = x
        x_conv = (conv * self.conv1d.weight[:, 0, :].float()).sum(-1)  # (b, d)
        if self.conv1d.bias is not None:
            x_conv = x_conv + self.conv1d.bias.float()
        x_conv = F.silu(x_conv).to(x.dtype)
        dt, B, C = self.selection(x_conv)
        A = -torch.exp(self.A_log.float())  # contiguous, as the decode kernel's loads are tuned
        return selective_state_update(state.ssm, x_conv, dt, A, B, C, self.D.float(), z=z,
                                      dt_bias=self.delta_bias(), dt_softplus=True)


class Mamba(nn.Module):
    """The Mamba mixer: in_proj, (bi)directional SelectiveSSM, out_proj.

    Args:
        config: a MambaConfig.
        d_model: width of this mixer (the U-Net uses several widths).
    Shape:
        forward: (b, l, d_model) -> (b, l, d_model);  step: (b, d_model) -> (b, d_model)
    """

    def __init__(self, config, d_model: int):
        super().__init__()
        self.d_model = d_model
        self.d_inner = config.expand * d_model
        dt_rank = config.dt_rank_for(d_model)
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=config.bias)
        self.ssm = SelectiveSSM(config, self.d_inner, dt_rank)
        self.ssm_reverse = None
        if config.bidirectional:
            self.ssm_reverse = SelectiveSSM(config, self.d_inner, dt_rank)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=config.bias)

    def forward(self, u: torch.Tensor, state: MixerState = None,
                reverse_index: torch.Tensor = None) -> torch.Tensor:
        """Parallel mode.

        Args:
            u: (b, l, d_model)
            state: optional MixerState to start from, updated to the final state (causal only).
            reverse_index: (b, l) int64, the order in which the reversed branch reads the
                positions (see `reverse_index`); None: plain reversal.
        Returns:
            (b, l, d_model)
        """
        xz = self.in_proj(u).transpose(1, 2)  # (b, 2 * d_inner, l)
        x, z = xz.chunk(2, dim=1)  # (b, d_inner, l) each
        y = self.ssm(x, z, state)
        if self.ssm_reverse is not None:
            if state is not None:
                raise ValueError("a bidirectional mixer has no recurrent state; "
                                 "call it without state")
            if reverse_index is None:
                y = y + self.ssm_reverse(x.flip(-1), z.flip(-1)).flip(-1)
            else:
                idx = reverse_index.unsqueeze(1).expand_as(x)  # (b, d_inner, l)
                y_rev = self.ssm_reverse(x.gather(-1, idx), z.gather(-1, idx))
                y = y + y_rev.gather(-1, idx)  # the permutation is its own inverse
        return self.out_proj(y.transpose(1, 2))  # (b, l, d_model)

    def step(self, u: torch.Tensor, state: MixerState) -> torch.Tensor:
        """Recurrent mode, one time step: u (b, d_model) -> (b, d_model); state updated in place."""
        if self.ssm_reverse is not None:
            raise ValueError("a bidirectional mixer cannot run step by step (it reads the future)")
        x, z = self.in_proj(u).chunk(2, dim=-1)  # (b, d_inner) each
        return self.out_proj(self.ssm.step(x, z, state))

    def allocate_state(self, batch_size: int, device=None) -> MixerState:
        """Zero state for `batch_size` sequences, in fp32."""
        device = device or self.in_proj.weight.device
        return MixerState(
            conv=torch.zeros(batch_size, self.d_inner, self.ssm.d_conv, device=device),
            ssm=torch.zeros(batch_size, self.d_inner, self.ssm.d_state, device=device),
        )
