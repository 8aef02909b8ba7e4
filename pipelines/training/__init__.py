"""The training loop that every training command shares, one concern a module.

    config.py        TrainConfig, the `train:` section (no torch: config errors answer at once)
    trainer.py       Trainer: set-up, `fit` (the loop, top to bottom), evaluation, checkpoints
    losses.py        LossOutput and the loss functions (LM, classifier, synthetic answers)
    evaluation.py    evaluate(): mean loss and metrics over a dataset, sharded over ranks
    optim.py         AdamW parameter groups, warm-up + cosine LR schedule
    checkpoint.py    checkpoint folders: atomic write, recovery after a kill, verified reads
    distributed.py   torchrun: process group, DDP/FSDP, context-parallel groups, rank-0 logging
    device.py        the device a job runs on; moving batches there
    rng.py           seeding and RNG states (exact resume)
    metrics.py       metrics.csv, TensorBoard, the loss curve
    signals.py       SIGINT/SIGTERM as a flag the loop checks after each step

This package's __init__ imports nothing, so that `training.config` stays light.
"""
