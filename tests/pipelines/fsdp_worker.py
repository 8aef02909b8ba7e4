"""Train a tiny MambaLM for a few AdamW steps, sharded with FSDP2 under torchrun or in one
process, and save the final weights as a checkpoint folder (used by test_distributed.py).

    torchrun --nproc_per_node 2 tests/pipelines/fsdp_worker.py OUT_DIR
    python tests/pipelines/fsdp_worker.py OUT_DIR            # the one-process reference

Every step draws a global batch of 8 windows; rank r trains on windows r, r + world, ... Writes
OUT_DIR/losses.json (the mean loss over the global batch per step) and OUT_DIR/model/.
"""

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from mamba_bio_audio.pipelines.distributed import save_full_pretrained, shard_model

from mamba_bio_audio.config import MambaConfig
from mamba_bio_audio.models import MambaLM

STEPS, BATCH, LENGTH = 6, 8, 48


def main(out: Path) -> None:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if world > 1 else 0
    torch.manual_seed(0)
    model = MambaLM(MambaConfig(d_model=16, n_layer=2, d_state=4, vocab_size=12))
    if world > 1:
        shard_model(model)
        kinds = {type(p).__name__ for p in model.parameters()}
        assert kinds == {"DTensor"}, kinds  # every parameter is sharded
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    data = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(STEPS):
        ids = torch.randint(0, 12, (BATCH, LENGTH), generator=data)[rank::world]
        logits = model(ids)[:, :-1]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        mean = loss.detach().clone()
        if world > 1:
            dist.all_reduce(mean)
            mean /= world
        losses.append(float(mean))
    if world > 1:
        save_full_pretrained(model, out / "model")
    else:
        model.save_pretrained(out / "model")
    if rank == 0:
        (out / "losses.json").write_text(json.dumps(losses))
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
