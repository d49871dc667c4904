"""gradwatch for PyTorch: `Session` guards a plain torch.optim training loop through gradwatchd.
See gradwatch/torch/session.py for the loop and the contract."""
from gradwatch.torch.grad_stats import GradStats, grad_stats
from gradwatch.torch.session import AppliedCommand, CheckpointError, Clip, Session, SessionError
from gradwatch.torch.update_size import UpdateSize, predict_update

__all__ = ["AppliedCommand", "CheckpointError", "Clip", "GradStats", "Session", "SessionError", "UpdateSize",
           "grad_stats", "predict_update"]
