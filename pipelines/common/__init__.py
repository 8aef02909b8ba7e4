"""What the commands share besides the training loop.

    run_config.py    RunConfig (model, data, train sections) from YAML + key=value overrides
    runs.py          the training commands' common arguments, the run folder, --resume
    datasets.py      train/val/test datasets from a DataConfig
    model_files.py   the files beside a model (tokenizer.json, data_config.json) and folder lookup
    arguments.py     argparse types
    inference.py     class probabilities of a classifier (test sets, predict)
    baselines.py     Markov, k-mer and MFCC baselines; classification metrics
    outputs.py       output files and folders: written atomically, removed when a command fails
    figures.py       the figure helper (matplotlib, saved atomically)

Nothing here imports torch at import time except datasets.py, inference.py and baselines.py.
"""
