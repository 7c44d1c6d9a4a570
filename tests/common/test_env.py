"""The provenance record (s1/common/env.py): a dirty tree is one with uncommitted code."""
import os
import subprocess


def _git(root, *args):
    subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.com",
                    "-c", "commit.gpgsign=false", *args], check=True, capture_output=True, text=True)


def test_env_dirty_counts_untracked_code(tmp_path):
    from s1.common.env import environment, git_state
    root = tmp_path / "repo"
    (root / "s1" / "kernels").mkdir(parents=True)
    (root / "bench" / "results").mkdir(parents=True)
    (root / "s1" / "kernels" / "a.py").write_text("x = 1\n")
    (root / "bench" / "results" / "r.json").write_text("{}\n")
    (root / ".gitignore").write_text("*.pyc\n")
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "init")

    commit, dirty, paths = git_state(root)
    assert commit and dirty is False and paths == []
    # not code: untracked outside the code folders, ignored files, a rewritten benchmark result
    (root / "notes.txt").write_text("scratch\n")
    (root / "s1" / "kernels" / "a.pyc").write_bytes(b"\0")
    (root / "bench" / "results" / "r.json").write_text('{"new": 1}\n')
    (root / "bench" / "results" / "new.json").write_text("{}\n")
    assert git_state(root)[1:] == (False, [])
    # new, never-committed code: dirty, and named
    (root / "s1" / "kernels" / "new_kernel.py").write_text("y = 2\n")
    (root / "s1" / "model").mkdir()
    (root / "s1" / "model" / "__init__.py").write_text('"""m"""\n')
    env = environment(root=root)
    assert env["commit"] == commit and env["dirty"] is True
    assert env["dirty_paths"] == ["?? s1/kernels/new_kernel.py", "?? s1/model/__init__.py"]
    # a tracked file that differs from HEAD (unstaged or staged) is dirty too
    os.remove(root / "s1" / "kernels" / "new_kernel.py")
    os.remove(root / "s1" / "model" / "__init__.py")
    (root / "s1" / "kernels" / "a.py").write_text("x = 3\n")
    assert git_state(root)[1:] == (True, ["M s1/kernels/a.py"])
    _git(root, "add", "s1/kernels/a.py")
    assert git_state(root)[1:] == (True, ["M s1/kernels/a.py"])
    # the path list stays short
    _git(root, "commit", "-q", "-m", "2")
    for i in range(30):
        (root / "tests" / f"t{i:02d}.py").parent.mkdir(exist_ok=True)
        (root / "tests" / f"t{i:02d}.py").write_text("")
    _, dirty, paths = git_state(root)
    assert dirty is True and len(paths) == 21 and paths[-1] == "... (+10 more)"
    # not a git repository: unknown, not clean
    plain = tmp_path / "plain"
    plain.mkdir()
    assert git_state(plain) == (None, None, None)
