"""Checkpoints are byte-for-byte reproducible: the safetensors header's metadata keys are
written sorted (safetensors wrote them from a hash map, in an order that changed from one
save to the next), and files with the keys in any order, as earlier versions wrote them,
still load and are still verified by their checksum."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from lapnet.checkpoint import DIGEST_KEY, META_KEY, load_tensors, save_tensors
from lapnet.errors import CheckpointError

ARRAYS = {"rnn.weight": np.arange(12, dtype=np.float32).reshape(3, 4), "head.bias": np.ones(3),
          "step": np.array(7, dtype=np.int64), "empty": np.zeros((0, 2), np.float32)}
META = {"kind": "charlm", "trainer": {"step": 7, "elapsed": 1.5}, "note": "caf\u00e9"}


def _header(raw: bytes) -> tuple[int, dict, list[str]]:
    n = int.from_bytes(raw[:8], "little")
    text = raw[8:8 + n].decode("utf-8")
    header = json.loads(text)
    return n, header, list(header)


def test_metadata_keys_are_written_sorted_every_time(tmp_path):
    seen = set()
    for i in range(8):  # the hash map's order changed between saves within one process too
        path = tmp_path / f"m{i}.safetensors"
        save_tensors(path, ARRAYS, META)
        raw = path.read_bytes()
        n, header, keys = _header(raw)
        assert keys[0] == "__metadata__" and list(header["__metadata__"]) == sorted([META_KEY, DIGEST_KEY])
        assert n % 8 == 0  # the format's padding of the header
        seen.add(raw)
        arrays, meta = load_tensors(path)
        assert meta == META and all(np.array_equal(arrays[k], v) for k, v in ARRAYS.items())
    assert len(seen) == 1


def test_two_processes_write_the_same_bytes(tmp_path):
    code = ("import sys, numpy as np; from lapnet.checkpoint import save_tensors; "
            "save_tensors(sys.argv[1], {'b': np.arange(5, dtype=np.float32), 'a': np.ones((2, 2))}, "
            "{'x': 1, 'y': [1, 2]})")
    for name in ("p1", "p2", "p3"):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / name)], check=True)
    first = (tmp_path / "p1").read_bytes()
    assert (tmp_path / "p2").read_bytes() == first and (tmp_path / "p3").read_bytes() == first


@pytest.mark.parametrize("order", [[DIGEST_KEY, META_KEY], [META_KEY, DIGEST_KEY]])
def test_a_file_with_its_metadata_keys_in_either_order_loads_and_is_verified(tmp_path, order):
    # as earlier versions wrote them: the same header with the keys swapped (and without padding)
    path = tmp_path / "m.safetensors"
    save_tensors(path, ARRAYS, META)
    raw = path.read_bytes()
    n, header, _ = _header(raw)
    meta = header.pop("__metadata__")
    header = {**header, "__metadata__": {k: meta[k] for k in order}}
    text = json.dumps(header, separators=(",", ":")).encode()
    old = tmp_path / "old.safetensors"
    old.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + n:])
    arrays, got = load_tensors(old)
    assert got == META and all(np.array_equal(arrays[k], v) for k, v in ARRAYS.items())
    bad = bytearray(old.read_bytes())
    bad[-20] ^= 1  # a flipped bit in the data: the checksum still catches it
    old.write_bytes(bytes(bad))
    with pytest.raises(CheckpointError, match="corrupt checkpoint"):
        load_tensors(old)
