"""`python -m s1.train` with injected faults, for the multi-process restart tests (no tests here).

S1_TEST_FAULT=torn:K        every rank dies (SIGKILL) right after step K's metrics line; rank 0
                            first leaves a torn half line of step K+1 in metrics.jsonl
S1_TEST_FAULT=kill_rank1:K  rank 1 alone dies after step K (writing the time to S1_TEST_DEATH_FILE)
S1_TEST_RANK_OUT=1          each rank gets its own --out (OUT/rank{RANK}): storage not shared
"""
import os
import signal
import sys
import time

from s1.train import metrics

fault = os.environ.get("S1_TEST_FAULT", "")
if fault:
    kind, at = fault.split(":")
    at = int(at)
    rank = int(os.environ.get("RANK", "0"))
    write = metrics.MetricsLog.write

    def faulty_write(self, rec):
        write(self, rec)
        if rec["step"] != at:
            return
        if kind == "torn":
            if self.f is not None:
                self.f.write('{"step": %d, "epoch": 1.2, "lo' % (at + 1))
                self.f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        elif kind == "kill_rank1" and rank == 1:
            with open(os.environ["S1_TEST_DEATH_FILE"], "w") as f:
                f.write(repr(time.time()))
            os.kill(os.getpid(), signal.SIGKILL)

    metrics.MetricsLog.write = faulty_write

if os.environ.get("S1_TEST_RANK_OUT"):
    i = sys.argv.index("--out")
    sys.argv[i + 1] = os.path.join(sys.argv[i + 1], f"rank{os.environ['RANK']}")

from s1.train.cli import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
