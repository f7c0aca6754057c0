"""`hpc-sft logs --all`: nodes' logs merged in time order; unstamped lines stay with the line before them."""
from pathlib import Path

from hpc_sft.logmerge import merge

NODE0 = """submitit INFO (2026-12-02 16:41:33,431) - Starting
2026-12-02 16:41:35,000 hpc_sft.node INFO: data cache hit
Traceback (most recent call last):
  File "x.py", line 1
2026-12-02 16:41:40,100 hpc_sft.node INFO: decision: finish"""
NODE1 = """submitit INFO (2026-12-02 16:41:33,900) - Starting
  progress 50% (no stamp: it keeps 33,900)
2026-12-02 16:41:39 hpc_sft.instructlab INFO: torchrun exited with 0"""


def test_lines_of_all_nodes_in_time_order_each_prefixed():
    assert merge({"node0": NODE0, "node1": NODE1}) == [
        "[node0] submitit INFO (2026-12-02 16:41:33,431) - Starting",
        "[node1] submitit INFO (2026-12-02 16:41:33,900) - Starting",
        "[node1]   progress 50% (no stamp: it keeps 33,900)",
        "[node0] 2026-12-02 16:41:35,000 hpc_sft.node INFO: data cache hit",
        "[node0] Traceback (most recent call last):",
        '[node0]   File "x.py", line 1',
        "[node1] 2026-12-02 16:41:39 hpc_sft.instructlab INFO: torchrun exited with 0",
        "[node0] 2026-12-02 16:41:40,100 hpc_sft.node INFO: decision: finish",
    ]


def test_worker_lines_carry_their_rank(monkeypatch):
    import io
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "hpc_sft" / "_worker"))
    from hpc_sft_shim import rankprefix

    out = io.StringIO()
    stream = rankprefix.Prefixed(out, "[rank3] ")
    stream.write("step 1\nstep")
    stream.write(" 2\n\nTraceback\r")
    assert out.getvalue() == "[rank3] step 1\n[rank3] step 2\n[rank3] \n[rank3] Traceback\r"
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setenv("HPC_SFT_RANK_PREFIX", "1")
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    monkeypatch.setenv("RANK", "1")
    rankprefix.install()  # not a torchrun worker: left alone
    assert sys.stdout is out
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    rankprefix.install()
    print("hello")
    assert out.getvalue().endswith("[rank1] hello\n")
