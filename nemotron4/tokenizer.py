"""SentencePiece BPE tokenizer, trained and loaded the way docs/paper.md section 2 describes.

Byte fallback (no `<unk>` for unseen characters), digits split one per token, whitespace preserved exactly
(identity normalisation, no collapsing, leading and trailing spaces kept, whitespace-only pieces allowed so code
indentation gets its own tokens). Special ids follow the released family: pad 0, unk 1, bos 2, eos 3.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from nemotron4.errors import UserError

__all__ = ["Tokenizer", "TokenizerConfig", "train_tokenizer"]

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


@dataclass(frozen=True)
class TokenizerConfig:
    """How to train the tokenizer."""

    vocab_size: int = 256000
    """Pieces in the vocabulary (256000 in the paper; a few thousand for the CPU demo)."""
    non_english_upsample: float = 2.0
    """Multilingual sources' weight in the training sample relative to their size (paper: "upsampled")."""
    sample_bytes: int = 200_000_000
    """Bytes of text drawn from the sources for training (the sample, before chunking)."""
    input_sentence_size: int = 2_000_000
    """Most chunks SentencePiece keeps (it samples down to this), bounding trainer memory."""
    max_sentence_bytes: int = 16384
    """Documents are cut into chunks of at most this many UTF-8 bytes (SentencePiece skips longer sentences)."""
    character_coverage: float = 0.9999
    """Fraction of characters covered by pieces; the rest go through byte fallback."""
    add_dummy_prefix: bool = False
    """SentencePiece's leading-space trick. Off: encode/decode is the identity on text and token streams of
    consecutive pieces of a document concatenate exactly."""
    seed: int = 0
    """Seed for the document sample."""
    num_threads: int = 0
    """Trainer threads; 0 means all cores."""

    def __post_init__(self) -> None:
        if self.vocab_size < 300:
            raise UserError(f"tokenizer vocab_size must be >= 300 (256 byte pieces + specials), got {self.vocab_size}")
        if self.non_english_upsample <= 0:
            raise UserError(f"non_english_upsample must be > 0, got {self.non_english_upsample}")


class Tokenizer:
    """A trained SentencePiece model. `encode` adds no bos/eos; callers add them (prepare appends eos per doc)."""

    def __init__(self, processor: object, path: str | None = None) -> None:
        self._sp = processor
        self.path = path
        self.vocab_size: int = processor.get_piece_size()
        self.bos_id: int = processor.bos_id()
        self.eos_id: int = processor.eos_id()
        self.pad_id: int = processor.pad_id()
        self.unk_id: int = processor.unk_id()

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        """Load a `.model` file written by `train_tokenizer`, or any SentencePiece model."""
        import sentencepiece as spm

        path = os.fspath(path)
        if not os.path.isfile(path):
            raise UserError(f"tokenizer model {path} not found; train one with `nemotron4 tokenizer train`")
        sp = spm.SentencePieceProcessor()
        try:
            sp.Load(path)
        except (OSError, RuntimeError) as e:
            raise UserError(f"cannot load tokenizer model {path}: {e}") from e
        return cls(sp, path)

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text)

    def encode_batch(self, texts: list[str], num_threads: int = 1) -> list[list[int]]:
        """Encode many texts in one call (SentencePiece's C++ loop, on `num_threads` threads)."""
        return self._sp.encode(texts, num_threads=num_threads)

    def decode(self, ids: Sequence[int] | Iterable[int]) -> str:
        return self._sp.decode([int(i) for i in ids])

    def id_to_piece(self, i: int) -> str:
        return self._sp.id_to_piece(int(i))

    def __repr__(self) -> str:
        return f"Tokenizer({self.path!r}, vocab_size={self.vocab_size})"


def _chunks(documents: Iterable[str], max_bytes: int) -> Iterator[str]:
    """Cut documents into pieces of <= max_bytes UTF-8 bytes, at newlines where possible."""
    for doc in documents:
        if not doc:
            continue
        if len(doc.encode("utf-8")) <= max_bytes:
            yield doc
            continue
        chunk, size = [], 0
        for line in doc.splitlines(keepends=True):
            n = len(line.encode("utf-8"))
            if size + n > max_bytes and chunk:
                yield "".join(chunk)
                chunk, size = [], 0
            while n > max_bytes:  # one huge line: cut by characters (max_bytes // 4 chars is <= max_bytes bytes)
                step = max_bytes // 4
                yield line[:step]
                line = line[step:]
                n = len(line.encode("utf-8"))
            chunk.append(line)
            size += n
        if chunk:
            yield "".join(chunk)


def train_tokenizer(
    documents: Iterable[str], output: str | os.PathLike, cfg: TokenizerConfig = TokenizerConfig()
) -> Tokenizer:
    """Train a BPE model on `documents` (already sampled, e.g. by `nemotron4.data.manifest.tokenizer_sample`) and
    write it to `output` (a `.model` file); returns the loaded tokenizer."""
    import sentencepiece as spm

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=_chunks(documents, cfg.max_sentence_bytes),
            model_writer=model,
            model_type="bpe",
            vocab_size=cfg.vocab_size,
            byte_fallback=True,
            split_digits=True,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            add_dummy_prefix=cfg.add_dummy_prefix,
            allow_whitespace_only_pieces=True,
            split_by_whitespace=True,  # pieces start at a space; runs of spaces are their own pieces
            character_coverage=cfg.character_coverage,
            max_sentence_length=cfg.max_sentence_bytes,
            input_sentence_size=cfg.input_sentence_size,
            shuffle_input_sentence=True,
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            num_threads=cfg.num_threads or os.cpu_count() or 1,
            minloglevel=2,
        )
    except RuntimeError as e:
        msg = str(e)
        if "smaller than required_chars" in msg:
            hint = (" (the text has more distinct characters than the vocabulary: raise --vocab-size, or lower "
                        "--character-coverage, e.g. 0.995: rarer characters then go through byte fallback)")
        elif "sentences_.empty()" in msg:
            msg, hint = "no text to train on", (": every input document was empty or not text (binary files are "
                                                "skipped); give text files, .jsonl or a manifest with content")
        elif "ocab" in msg:
            hint = " (the sample is too small for this vocabulary: lower --vocab-size or add text)"
        else:
            hint = ""
        raise UserError(f"SentencePiece training failed: {msg}{hint}") from e
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_bytes(model.getvalue())
    os.replace(tmp, output)
    return Tokenizer.load(output)
