"""The checkpoint checksum (lapnet.checkpoint): what it covers, what it refuses, what still loads.

A file written by this version carries "lapnet_format": 2 in its JSON metadata and a SHA-256
of that metadata text and of every array; older files (no marker, no checksum) keep loading.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from lapnet.checkpoint import DIGEST_KEY, FORMAT_KEY, META_KEY, load_tensors, save_tensors
from lapnet.errors import CheckpointError

WEIGHTS = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1.5, -2.0])}


def _header(data: bytes) -> tuple[int, dict]:
    """(end of the header, the header) of a safetensors file: 8-byte little-endian length, then JSON."""
    n = int.from_bytes(data[:8], "little")
    return 8 + n, json.loads(data[8:8 + n])


def _replace_once(data: bytes, old: bytes, new: bytes) -> bytes:
    assert len(old) == len(new) and data.count(old) == 1, (old, data.count(old))
    return data.replace(old, new)


def test_the_file_carries_the_marker_and_a_checksum_and_loads_back_without_the_marker(tmp_path):
    path = tmp_path / "m.safetensors"
    save_tensors(path, WEIGHTS, {"step": 3, "val_loss": 1.25})
    _, header = _header(path.read_bytes())
    meta_text = header["__metadata__"][META_KEY]
    assert json.loads(meta_text) == {"step": 3, "val_loss": 1.25, FORMAT_KEY: 2}
    assert len(header["__metadata__"][DIGEST_KEY]) == 64
    arrays, meta = load_tensors(path)
    assert meta == {"step": 3, "val_loss": 1.25}
    assert arrays["a"].dtype == np.float32 and np.array_equal(arrays["a"], WEIGHTS["a"])
    assert np.array_equal(arrays["b"], [1.5, -2.0])


def test_the_marker_is_a_reserved_meta_key(tmp_path):
    with pytest.raises(ValueError, match=FORMAT_KEY):
        save_tensors(tmp_path / "m.safetensors", WEIGHTS, {FORMAT_KEY: 1})
    assert not (tmp_path / "m.safetensors").exists()


def test_a_zero_size_array_saves_and_loads(tmp_path):
    path = tmp_path / "m.safetensors"
    save_tensors(path, {"w": np.zeros((0, 3)), "v": np.zeros(0, np.int64), "x": np.ones(2)}, {"step": 1})
    arrays, meta = load_tensors(path)
    assert meta == {"step": 1}
    assert arrays["w"].shape == (0, 3) and arrays["w"].dtype == np.float64
    assert arrays["v"].shape == (0,) and arrays["v"].dtype == np.int64
    assert np.array_equal(arrays["x"], [1.0, 1.0])
    # the empty array's shape is still covered: (0, 3) -> (3, 0) keeps the byte count (0) and the layout valid
    data = path.read_bytes()
    bad = _replace_once(data, b'"shape":[0,3]', b'"shape":[3,0]')
    path.write_bytes(bad)
    with pytest.raises(CheckpointError, match="checksum"):
        load_tensors(path)


def test_a_big_endian_array_saves_and_loads_as_the_same_values(tmp_path):
    path = tmp_path / "m.safetensors"
    save_tensors(path, {"w": np.arange(4, dtype=">f8"), "i": np.array([1, -2, 3], dtype=">i4")}, {"step": 2})
    arrays, meta = load_tensors(path)
    assert meta == {"step": 2}
    assert arrays["w"].dtype == np.dtype("<f8") and arrays["w"].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert arrays["i"].dtype == np.dtype("<i4") and arrays["i"].tolist() == [1, -2, 3]


def test_a_zero_dim_scalar_and_a_bool_array_round_trip(tmp_path):
    path = tmp_path / "m.safetensors"
    save_tensors(path, {"s": np.array(2.5), "m": np.array([True, False])})
    arrays, meta = load_tensors(path)
    assert meta == {}
    assert arrays["s"].shape == () and float(arrays["s"]) == 2.5
    assert arrays["m"].tolist() == [True, False]


def test_every_changed_byte_of_the_weights_is_refused(tmp_path):
    path = tmp_path / "m.safetensors"
    save_tensors(path, WEIGHTS, {"step": 3})
    good = path.read_bytes()
    end, _ = _header(good)
    assert len(good) - end == WEIGHTS["a"].nbytes + WEIGHTS["b"].nbytes
    for i in range(end, len(good)):
        bad = bytearray(good)
        bad[i] ^= 0x01
        path.write_bytes(bytes(bad))
        with pytest.raises(CheckpointError, match="checksum"):
            load_tensors(path)


def test_a_changed_metadata_value_is_refused(tmp_path):
    """The reviewer's case: "step": 3 -> 7 in the header used to load silently."""
    path = tmp_path / "m.safetensors"
    save_tensors(path, WEIGHTS, {"step": 3, "val_loss": 1.25})
    good = path.read_bytes()
    path.write_bytes(_replace_once(good, b'\\"step\\": 3', b'\\"step\\": 7'))
    with pytest.raises(CheckpointError, match="checksum"):
        load_tensors(path)
    path.write_bytes(_replace_once(good, b"1.25", b"1.26"))
    with pytest.raises(CheckpointError, match="checksum"):
        load_tensors(path)


def test_every_flipped_byte_of_the_metadata_text_is_refused(tmp_path):
    """Whatever a flip does to the meta (a changed value, broken JSON, a broken header, the
    marker itself gone), the file never loads."""
    path = tmp_path / "m.safetensors"
    save_tensors(path, WEIGHTS, {"step": 3, "val_loss": 1.25})
    good = path.read_bytes()
    end, header = _header(good)
    meta_in_file = json.dumps(header["__metadata__"][META_KEY])[1:-1].encode()  # as escaped in the header
    start = good.index(meta_in_file)
    assert start < end
    for i in range(start, start + len(meta_in_file)):
        bad = bytearray(good)
        bad[i] ^= 0x01
        path.write_bytes(bytes(bad))
        with pytest.raises(CheckpointError):
            load_tensors(path)


def test_a_renamed_or_dropped_checksum_key_is_refused(tmp_path):
    path = tmp_path / "m.safetensors"
    save_tensors(path, WEIGHTS, {"step": 3})
    good = path.read_bytes()
    path.write_bytes(_replace_once(good, DIGEST_KEY.encode(), b"lapnet_sha999"))
    with pytest.raises(CheckpointError, match="no checksum"):
        load_tensors(path)
    # the same file rewritten without the checksum at all (what a tool rewriting the header would do)
    from safetensors.numpy import save

    _, header = _header(good)
    path.write_bytes(save(WEIGHTS, metadata={META_KEY: header["__metadata__"][META_KEY]}))
    with pytest.raises(CheckpointError, match="no checksum"):
        load_tensors(path)


def test_a_removed_marker_does_not_turn_the_check_off(tmp_path):
    path = tmp_path / "m.safetensors"
    save_tensors(path, WEIGHTS, {"step": 3})
    path.write_bytes(_replace_once(path.read_bytes(), FORMAT_KEY.encode(), b"lapnet_formaX"))
    with pytest.raises(CheckpointError, match="checksum"):
        load_tensors(path)


def test_a_newer_format_is_refused_by_name(tmp_path):
    from safetensors.numpy import save

    from lapnet.checkpoint import _digest

    meta_text = json.dumps({"step": 3, FORMAT_KEY: 3})
    path = tmp_path / "m.safetensors"
    path.write_bytes(save(WEIGHTS, metadata={META_KEY: meta_text, DIGEST_KEY: _digest(WEIGHTS, meta_text)}))
    with pytest.raises(CheckpointError, match="format 3"):
        load_tensors(path)


def test_a_file_from_before_the_checksum_still_loads(tmp_path):
    """No marker, no checksum: written before 2026-11-27; loads unchecked, as it always did."""
    from safetensors.numpy import save

    path = tmp_path / "old.safetensors"
    path.write_bytes(save(WEIGHTS, metadata={META_KEY: '{"step": 3}'}))
    arrays, meta = load_tensors(path)
    assert meta == {"step": 3}
    assert np.array_equal(arrays["a"], WEIGHTS["a"]) and np.array_equal(arrays["b"], WEIGHTS["b"])
