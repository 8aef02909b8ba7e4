"""Autoregressive sampling from a MambaLM in recurrent mode.

The prompt primes the recurrent state through the parallel forward (the longest prefix that is a
multiple of the U-Net pooling product; the rest, and every new token, goes through `step`). Each
step costs the same whatever the position: the state has a fixed size.

On a GPU one step is a few hundred small kernels, so its time is launch overhead; `GraphedStep`
records it once as CUDA graphs (one per phase of the U-Net pooling cycle, since each phase runs
different stages) and replays them.
"""

import functools

import torch


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0,
                top_p: float = 1.0, generator: torch.Generator = None) -> torch.Tensor:
    """Draw one token per row.

    Args:
        logits: (b, vocab)
        temperature: 0 for greedy (argmax), otherwise logits are divided by it.
        top_k: keep only the k most likely tokens (0: all).
        top_p: keep the smallest set of tokens whose probability reaches top_p (1.0: all).
        generator: torch.Generator for reproducible draws (None: the global RNG).
    Returns:
        (b,) int64 token ids.
    """
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (b, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs > top_p  # never drops the most likely token
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


class GraphedStep:
    """`model.step` replayed from CUDA graphs, for one state and batch size.

    The state's tensors are updated in place by the replays exactly as by `model.step`; the
    graphs hold their addresses, so the state must not be re-allocated (a parallel forward with
    it replaces its tensors) while this object is used.

    Args:
        model: a MambaLM on a CUDA device.
        state: its state from `allocate_state(batch_size)` (primed or not).
        batch_size: the state's batch size.
        position: how many tokens the state has consumed.
    """

    def __init__(self, model, state, batch_size: int, position: int):
        self.model, self.state, self.position = model, state, position
        self.period = model.config.pool_product
        device = model.lm_head.weight.device
        self.ids = torch.zeros(batch_size, dtype=torch.long, device=device)
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):  # compile kernels and create workspaces before capture
            scratch = model.allocate_state(batch_size)
            for _ in range(self.period + 2):
                model.step(self.ids, scratch)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graphs, self.logits, pool = [], [], None
        for phase in range(self.period):
            model.backbone.set_position(state, phase)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                self.logits.append(model.step(self.ids, state))
            self.graphs.append(graph)
            pool = graph.pool()
        model.backbone.set_position(state, position)

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (b,) -> logits (b, vocab), a buffer that the same phase overwrites next cycle."""
        phase = self.position % self.period
        self.ids.copy_(ids)
        self.graphs[phase].replay()
        self.position += 1
        self.model.backbone.set_position(self.state, self.position)
        return self.logits[phase]


def _check(name, value, ok, expected):
    if not ok:
        raise ValueError(f"{name}={value!r}: expected {expected}")


@torch.inference_mode()
def generate(model, prompt_ids, max_new_tokens: int, temperature: float = 1.0, top_k: int = 0,
             top_p: float = 1.0, seed: int = None, callback=None,
             cuda_graph: bool = None) -> torch.Tensor:
    """Continue `prompt_ids` by `max_new_tokens` sampled tokens.

    Args:
        model: a MambaLM.
        prompt_ids: (L0,) or (b, L0) int token ids, L0 >= 1.
        max_new_tokens: number of tokens to generate.
        temperature, top_k, top_p: see `sample_next`.
        seed: makes the draws reproducible (None: the global RNG).
        callback: called as callback(tokens (b,), index) after each new token, for streaming long
            outputs (e.g. writing audio blocks as they come).
        cuda_graph: replay the steps from CUDA graphs (`GraphedStep`, ~15x faster on an H100);
            None: when the model is on a CUDA device.
    Returns:
        (b, L0 + max_new_tokens) int64: the prompt followed by the new tokens ((L0 + n,) for a
        1-D prompt).
    """
    device = model.lm_head.weight.device
    prompt = torch.as_tensor(prompt_ids, device=device).long()
    squeeze = prompt.dim() == 1
    prompt = prompt.unsqueeze(0) if squeeze else prompt
    _check("prompt_ids", tuple(prompt.shape), prompt.dim() == 2 and prompt.shape[1] >= 1,
           "shape (length,) or (batch, length) with length >= 1")
    _check("max_new_tokens", max_new_tokens, max_new_tokens >= 0, "an integer >= 0")
    _check("temperature", temperature, temperature >= 0, "a number >= 0 (0 = greedy)")
    _check("top_k", top_k, top_k >= 0, "an integer >= 0 (0 = off)")
    _check("top_p", top_p, 0 < top_p <= 1, "a number in (0, 1] (1 = off)")
    _check("cuda_graph", cuda_graph, not cuda_graph or device.type == "cuda",
           "False for a model that is not on a CUDA device")
    vocab = model.config.vocab_size
    _check("prompt_ids", "values", bool(((prompt >= 0) & (prompt < vocab)).all()),
           f"token ids in [0, {vocab})")
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)

    b, L0 = prompt.shape
    out = torch.empty(b, L0 + max_new_tokens, dtype=torch.long, device=device)
    out[:, :L0] = prompt
    state = model.allocate_state(b)
    n_parallel = L0 // model.config.pool_product * model.config.pool_product
    logits = None
    if n_parallel > 0:
        logits = model(prompt[:, :n_parallel], state)[:, -1]  # (b, vocab)
    for t in range(n_parallel, L0):
        logits = model.step(prompt[:, t], state)
    step = functools.partial(model.step, state=state)
    if cuda_graph is None:
        cuda_graph = device.type == "cuda"
    if cuda_graph and max_new_tokens > 1:
        step = GraphedStep(model, state, b, L0)
    for i in range(max_new_tokens):
        token = sample_next(logits, temperature, top_k, top_p, generator)  # (b,)
        out[:, L0 + i] = token
        if callback is not None:
            callback(token, i)
        if i + 1 < max_new_tokens:
            logits = step(token)
    return out[0] if squeeze else out
