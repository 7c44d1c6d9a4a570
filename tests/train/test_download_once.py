"""A Hub dataset is loaded by rank 0 before any other rank starts (they then read the cache), and
a failed download stops every rank with rank 0's error (2 gloo ranks, mp.spawn)."""
import json
import os
import socket
import time

import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, port, log, fail):
    import torch.distributed as dist

    from s1.train import loop
    os.environ.update(LOCAL_RANK=str(rank))
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)

    def fake_load_rows(data, split):
        t0 = time.time()
        if rank == 0:
            time.sleep(0.5)  # a slow download
            if fail:
                raise ConnectionError("hub unreachable")
        with open(f"{log}.{rank}", "w") as f:
            json.dump([t0, time.time()], f)
        return [{"question": "q"}]
    loop.load_rows = fake_load_rows
    try:
        rows = loop.load_rows_once("simplescaling/s1K", "train")
        assert rows == [{"question": "q"}]
        res = "ok"
    except Exception as e:  # noqa: BLE001
        res = f"{type(e).__name__}: {e}"
    with open(f"{log}.res{rank}", "w") as f:
        f.write(res)
    dist.destroy_process_group()


def test_hub_dataset_is_loaded_by_rank0_first(tmp_path):
    log = str(tmp_path / "t")
    mp.spawn(_worker, args=(_free_port(), log, False), nprocs=2)
    t0, t1 = (json.load(open(f"{log}.{r}")) for r in (0, 1))
    assert t1[0] >= t0[1]  # rank 1 started after rank 0 had finished
    assert [open(f"{log}.res{r}").read() for r in (0, 1)] == ["ok", "ok"]


def test_a_failed_download_stops_every_rank(tmp_path):
    log = str(tmp_path / "f")
    mp.spawn(_worker, args=(_free_port(), log, True), nprocs=2)
    r0, r1 = (open(f"{log}.res{r}").read() for r in (0, 1))
    assert r0 == "ConnectionError: hub unreachable"
    assert "hub unreachable" in r1 and "rank(s) 0" in r1
    assert not os.path.exists(f"{log}.1")  # rank 1 never tried
