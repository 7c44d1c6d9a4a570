"""The model runner: its device-side decode inputs track the sequences (conftest.py's tiny
checkpoint, tests/helpers.py's engine helpers)."""
import pytest

from s1.infer import SamplingParams
from tests.helpers import make_llm, prompts_of

pytestmark = pytest.mark.usefixtures("torch_backend")


def test_decode_columns_track_the_sequences(model, tok, monkeypatch):
    """The decode-columns invariant (s1/infer/runner.py `_next`, rows NEXT_*): before every decode
    step, each running sequence with n tokens has column (NEXT_SLOT: its slot, NEXT_POS: n - 1,
    NEXT_CACHE_SLOT: the cache slot of position n - 1, NEXT_CONTEXT: n), kept on the device
    (set by the prefill, advanced by each decode step, pointed at new pages) -- through
    preemption, prefix hits, budget forcing and async output."""
    from s1.infer.runner import NEXT_CACHE_SLOT, NEXT_CONTEXT, NEXT_POS, NEXT_SLOT, NUM_NEXT_ROWS, ModelRunner
    checked = []
    orig = ModelRunner.run

    def run(self, seqs, is_prefill):
        if not is_prefill:
            self._flush_pages()
            ps = self.page_size
            for s in seqs:
                n = s.num_tokens
                want = [0] * NUM_NEXT_ROWS
                want[NEXT_SLOT], want[NEXT_POS], want[NEXT_CONTEXT] = s.slot, n - 1, n
                want[NEXT_CACHE_SLOT] = s.block_table[(n - 1) // ps] * ps + (n - 1) % ps
                assert self._next[:, s.slot].tolist() == want, (s, self._next[:, s.slot].tolist(), want)
            checked.append(len(seqs))
        return orig(self, seqs, is_prefill)
    monkeypatch.setattr(ModelRunner, "run", run)
    prompts = prompts_of([21, 13, 9])
    prompts.append(prompts[0][:16] + prompts[1][:5])      # shares 4 pages with the first
    params = SamplingParams(max_thinking_tokens=9, num_wait=1, max_tokens=30, ignore_eos=True)
    for async_output in (False, True):
        small = make_llm(model, tok, num_pages=16, async_output=async_output)
        outs = small.generate(prompts, params, use_tqdm=False)
        big = make_llm(model, tok, async_output=async_output)
        assert [o.output_token_ids for o in outs] == [o.output_token_ids for o in big.generate(
            prompts, params, use_tqdm=False)]
        assert small.stats["preemptions"] > 0
    assert sum(checked) > 100
