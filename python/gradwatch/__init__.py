"""gradwatch's Python client: the reporter (no torch) that streams a training run to gradwatchd
over the v1 contract, and `gradwatch.torch.Session`, which guards a plain PyTorch loop with it.

    import gradwatch.torch
    with gradwatch.torch.Session(model, optimizer, monitor="127.0.0.1:7070") as gw: ...
"""
__version__ = "0.1.0"
