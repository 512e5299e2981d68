"""Text data: vocabulary, the train/validation split, contiguous TBPTT batches."""

from __future__ import annotations

import numpy as np
import pytest

from lapnet.data.text import TextBatches, Vocab, bundled_text, eval_layout, read_text, split_ids
from lapnet.errors import LapnetError


def test_bundled_text_is_the_notebooks_hamlet_passage():
    text = bundled_text()
    assert text.startswith("To be or not to be that is the question\n")
    assert "That patient merit of the unworthy takes" in text
    assert read_text(None) == text


def test_vocab_round_trip_and_unknown_characters_named():
    v = Vocab.from_text("hello world")
    assert v.chars == " dehlorw"
    ids = v.encode("hello")
    assert ids.dtype == np.int64 and v.decode(ids) == "hello"
    assert Vocab.from_json(v.to_json()) == v
    with pytest.raises(LapnetError, match=r"'X', 'Z'"):
        v.encode("helXo Zoo X", what="--prime")


def test_split_keeps_the_end_for_validation():
    ids = np.arange(100)
    train, val = split_ids(ids, 0.1)
    assert train.tolist() == list(range(90)) and val.tolist() == list(range(90, 100))
    with pytest.raises(LapnetError):
        split_ids(ids, 1.0)


def test_batches_are_contiguous_streams_shifted_by_one():
    ids = np.arange(1000)
    b = TextBatches(ids, batch=4, seq_len=10, seed=3)
    chunks = list(b.epoch(0))
    assert len(chunks) == b.steps_per_epoch() == (250 - 10) // 10
    for x, y in chunks:
        assert x.shape == y.shape == (4, 10)
        np.testing.assert_array_equal(y[:, :-1], x[:, 1:])  # y is x one character on
        np.testing.assert_array_equal(y, x + 1)  # here: the next id of the text
    for (x0, y0), (x1, _) in zip(chunks, chunks[1:]):
        np.testing.assert_array_equal(x1[:, 0], y0[:, -1])  # chunk k+1 continues chunk k, row by row
    np.testing.assert_array_equal(chunks[0][0][:, 0] % 250, chunks[0][0][0, 0])  # rows are the 4 quarters


def test_batches_repeat_per_seed_and_epoch_and_vary_across_epochs():
    ids = np.random.default_rng(0).integers(0, 50, 5000)
    a, b = TextBatches(ids, 8, 16, seed=1), TextBatches(ids, 8, 16, seed=1)
    for e in range(3):
        for (x1, y1), (x2, y2) in zip(a.epoch(e), b.epoch(e)):
            np.testing.assert_array_equal(x1, x2)
    starts = {next(iter(a.epoch(e)))[0][0, 0] for e in range(20)}
    assert len(starts) > 1  # epochs cut the text at different offsets


def test_short_text_shrinks_the_batch_and_refuses_less_than_one_window():
    b = TextBatches(np.arange(100), batch=32, seq_len=20, seed=0)
    assert b.batch == 100 // 21 and b.steps_per_epoch() >= 1
    with pytest.raises(LapnetError, match="shorter than one training window"):
        TextBatches(np.arange(20), batch=4, seq_len=20)


def test_eval_layout_scores_the_validation_text_in_contiguous_streams():
    ids = np.arange(10_000)
    rows = eval_layout(ids)
    S, L1 = rows.shape
    assert S > 1 and S * (L1 - 1) >= len(ids) - S
    np.testing.assert_array_equal(rows[1:, 0], rows[:-1, -1])  # each stream starts where the last ended
    assert eval_layout(np.arange(2)).shape == (1, 2)


def test_cli_defaults_are_the_library_defaults():
    import inspect

    from lapnet.cli.text import train_cmd
    from lapnet.models.charlm import CharLMConfig
    from lapnet.text_runs import TextDataConfig, text_train_config

    opts = {k: p.default.default for k, p in inspect.signature(train_cmd).parameters.items() if k != "ctx"}
    model, data, train = CharLMConfig(1), TextDataConfig(), text_train_config()
    for k in ("arch", "hidden", "layers", "embed", "dropout"):
        assert opts[k] == getattr(model, k), k
    for k in ("seq_len", "val_frac"):
        assert opts[k] == getattr(data, k), k
    from lapnet.text_runs import DEFAULT_BATCH

    # --batch not given: up to DEFAULT_BATCH streams, fewer without a warning on a short text
    assert opts["batch"] is None and data.batch == DEFAULT_BATCH == 32
    for k in ("lr", "schedule", "clip", "seed"):
        assert opts[k] == getattr(train, k), k
    assert train.minutes == 1.0 and train.epochs is None  # neither --epochs nor --minutes: one minute


def test_set_threads_sets_torch_and_reports_openblas():
    import torch

    from lapnet.cli.common import set_threads

    before = torch.get_num_threads()
    try:
        got = set_threads(1)
        assert got["torch"] == 1 == torch.get_num_threads()
        assert got["openblas"] in (1, None)  # None: this NumPy's BLAS is not reachable
    finally:
        torch.set_num_threads(before)
    with pytest.raises(LapnetError, match="--threads"):
        set_threads(0)
