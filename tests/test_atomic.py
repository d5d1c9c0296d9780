"""Workers that share a cache folder write the same file at the same moment (the CI failure
of stop 19: two PostgreSQL workers tokenized the same split, and one renamed the other's
temporary file away)."""

from concurrent.futures import ThreadPoolExecutor

import torch

from hypertweaks.atomic import save_torch, write_text


def test_many_writers_of_one_cache_file_all_succeed_and_leave_one_whole_file(tmp_path):
    path = tmp_path / "cache" / "tokens.pt"
    tensors = [torch.full((2000,), i) for i in range(16)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda t: save_torch(t, path), tensors))
    loaded = torch.load(path, weights_only=True)
    assert any(torch.equal(loaded, t) for t in tensors)
    assert [p.name for p in path.parent.iterdir()] == ["tokens.pt"]  # no temporary left behind


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "results.json"
    write_text(path, "old")

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot save")

    try:
        save_torch(Unpicklable(), path)
    except RuntimeError:
        pass
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
