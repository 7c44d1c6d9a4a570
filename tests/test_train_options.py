"""Trainer options with s1's defaults (s1/train/loop.py): each sequence weighs the same by default,
and --resume without a checkpoint is an error instead of a silent fresh start."""
import pytest

from tests.test_train_utils import TINY, digit_rows
from s1.train import TrainConfig, train


def _cfg(tmp_path, **kw):
    return TrainConfig(**dict(data=digit_rows(4), out=str(tmp_path / "out"), init_config=dict(TINY),
                              block_size=256, progress=False) | kw)


def test_sequence_weighting_is_the_default(tmp_path):
    """s1 trains one sequence per GPU, each weighing the same: the default; token-mean stays an option."""
    cfg = _cfg(tmp_path)
    assert (cfg.loss_weighting, cfg.micro_batch_size, cfg.pack) == ("sequence", 1, False)
    assert _cfg(tmp_path, loss_weighting="token", micro_batch_size=4, global_batch_size=4).loss_weighting == "token"
    with pytest.raises(ValueError, match="micro_batch_size=4 .*use loss_weighting='token' \\(--loss-weighting token\\)"):
        _cfg(tmp_path, micro_batch_size=4, global_batch_size=4)
    with pytest.raises(ValueError, match="packing"):
        _cfg(tmp_path, pack=True)


def test_resume_without_a_checkpoint_is_an_error_naming_the_folder(tmp_path, qwen_tokenizer_dir):
    """`train --resume` into an --out with no complete checkpoint stops before any work (no model
    built, --out not even created) with a message naming the checkpoints folder."""
    cfg = _cfg(tmp_path, tokenizer=str(qwen_tokenizer_dir), resume=True)
    with pytest.raises(ValueError, match=r"--resume: no complete checkpoint in .*out/checkpoints") as e:
        train(cfg)
    assert "run without --resume" in str(e.value)
    assert not (tmp_path / "out").exists()
