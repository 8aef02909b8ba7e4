"""Run under torchrun: a model's logits, loss and every parameter gradient with the sequence split
over all ranks (context parallelism) against the same model run whole in this process.

    torchrun --nproc_per_node N context_parallel_probe.py lm|classifier OUT.json

Each rank writes OUT.json.<rank> with the largest differences it measured."""

import json
import sys

import torch
import torch.distributed as dist

from mamba_bio_audio import MambaConfig, MambaLM
from mamba_bio_audio.models import MambaClassifier
from mamba_bio_audio.modules.context_parallel import context_parallel, new_groups
from mamba_bio_audio.pipelines.training.losses import classifier_loss, lm_loss


def main(kind: str, out: str) -> None:
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    L = 24 * world  # every slice (24) is longer than d_conv - 1
    cfg = MambaConfig(d_model=16, n_layer=2, d_state=4, vocab_size=12)
    if kind == "lm":
        model, loss_fn = MambaLM(cfg), lm_loss
        batch = {"ids": torch.randint(0, 12, (3, L))}
    else:
        cfg = MambaConfig(d_model=16, n_layer=2, d_state=4, vocab_size=12, n_classes=3)
        model, loss_fn = MambaClassifier(cfg), classifier_loss
        mask = torch.ones(3, L, dtype=torch.bool)
        mask[1, L - 30:] = False  # right padding reaching into the previous slice
        batch = {"ids": torch.randint(0, 12, (3, L)), "mask": mask, "label": torch.tensor([0, 2, 1])}
    params = dict(model.named_parameters())

    whole = loss_fn(model, batch)
    whole.loss.backward()
    ref = {k: p.grad.clone() for k, p in params.items()}
    model.zero_grad()

    cp = new_groups(world)
    with context_parallel(cp):
        part = loss_fn(model, batch)
        part.loss.backward()
        if kind == "lm":  # this rank's logits against the same positions of the whole run
            s = L // world
            local = model(batch["ids"][:, rank * s:(rank + 1) * s])
    if kind == "lm":
        with torch.no_grad():
            full = model(batch["ids"])[:, rank * s:(rank + 1) * s]
            alone = model(batch["ids"][:, rank * s:(rank + 1) * s])  # no state from slices before
        logit_diff = (local - full).abs().max().item()
        res_alone = (alone - full).abs().max().item()
    else:
        logit_diff = res_alone = 0.0
    sums = torch.tensor([float(part.loss) * part.weight, part.weight], dtype=torch.float64)
    dist.all_reduce(sums)
    grad_diff = {}
    for k, p in params.items():
        g = p.grad.clone()
        dist.all_reduce(g)  # what DDP averages: the mean over ranks
        g /= world
        grad_diff[k] = ((g - ref[k]).abs().max() / ref[k].abs().max().clamp_min(1e-12)).item()
    res = dict(rank=rank, world=world, loss_whole=float(whole.loss), loss_split=float(sums[0] / sums[1]),
               logit_diff=logit_diff, logit_diff_without_context=res_alone, max_relative_grad_diff=max(grad_diff.values()),
               worst=max(grad_diff, key=grad_diff.get), n_params=len(grad_diff))
    with open(f"{out}.{rank}", "w") as f:
        json.dump(res, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
