"""SFT trainer (issue 5): s1's recipe on FSDP2. `train(TrainConfig)` in-process, `s1 train` /
`torchrun -m train` from the shell."""
from train.loop import TrainConfig, TrainingDiverged, train


def run(args: list[str] | None = None) -> dict:
    """Parse `s1 train` arguments and train; returns train()'s result dict."""
    from train.cli import parse_args
    return train(parse_args(args))


__all__ = ["TrainConfig", "TrainingDiverged", "train", "run"]
