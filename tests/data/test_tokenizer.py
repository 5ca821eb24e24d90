from __future__ import annotations

import pytest
from helpers import data_docs as fake_docs

from nemotron4.errors import UserError
from nemotron4.tokenizer import Tokenizer, TokenizerConfig, train_tokenizer


@pytest.mark.parametrize(
    "text",
    [
        "  two leading spaces",
        "trailing spaces   ",
        "a  b   c    d",
        "line one\nline two\n\n\nafter blank lines\n",
        "\ttab\tseparated\t\tcolumns\t",
        "    def f(x):\n        return x\n",
        " ",
        "\n",
        "",
        "mixed \t \n whitespace \r\n end",
    ],
)
def test_whitespace_round_trips_exactly(tokenizer: Tokenizer, text: str) -> None:
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_digits_are_single_tokens(tokenizer: Tokenizer) -> None:
    ids = tokenizer.encode("year 2024 and 1234567890")
    pieces = [tokenizer.id_to_piece(i) for i in ids]
    digit_pieces = [p for p in pieces if any(c.isdigit() for c in p)]
    assert digit_pieces == list("2024") + list("1234567890")


def test_byte_fallback_for_unseen_characters(tokenizer: Tokenizer) -> None:
    text = "日本語 ☃ 🦜 Ωμέγα"
    ids = tokenizer.encode(text)
    assert tokenizer.unk_id not in ids
    assert any(tokenizer.id_to_piece(i).startswith("<0x") for i in ids)
    assert tokenizer.decode(ids) == text


def test_special_ids_and_vocab(tokenizer: Tokenizer) -> None:
    assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.bos_id, tokenizer.eos_id) == (0, 1, 2, 3)
    assert tokenizer.vocab_size == 400


def test_long_documents_are_chunked_not_dropped(tmp_path) -> None:
    # One 200 kB document: SentencePiece would skip it whole without chunking, leaving too little text to train.
    doc = "\n".join(fake_docs(600))
    tok = train_tokenizer([doc], tmp_path / "t.model", TokenizerConfig(vocab_size=350, num_threads=1))
    assert tok.vocab_size == 350


def test_vocab_too_large_is_a_user_error(tmp_path) -> None:
    with pytest.raises(UserError, match="vocab"):
        train_tokenizer(["tiny text"], tmp_path / "t.model", TokenizerConfig(vocab_size=5000, num_threads=1))


def test_load_missing_model(tmp_path) -> None:
    with pytest.raises(UserError, match="not found"):
        Tokenizer.load(tmp_path / "nope.model")
