"""Our SentencePiece tokenizer as a Hugging Face tokenizer directory (`tokenizer.json` + `tokenizer_config.json`).

With it next to the weights that `to_hf` writes, `AutoTokenizer.from_pretrained(dir)` (and so `lm_eval --model hf`)
tokenizes exactly as our `Tokenizer` does, with bos in front as the released Nemotron tokenizers add it.
The conversion is transformers' own (`SpmConverter.build_tokenizer_from_spm_proto`: BPE with merges ranked by
piece score, byte fallback, and the model's own normalizer settings); tests/eval/test_lm_eval.py checks the
identity on text with digits, runs of spaces, tabs, newlines and non-Latin scripts. Needs `protobuf`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

__all__ = ["save_hf_tokenizer"]


def save_hf_tokenizer(sp_model: str | Path, path: str | Path, add_bos: bool = True) -> Path:
    """Write `sp_model` (a SentencePiece .model file) into `path` as an HF fast tokenizer; also copies the .model
    file there as `tokenizer.model`, which is what our side (`nemotron4 eval`) reads."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import SpmConverter, import_protobuf

    sp_model, path = Path(sp_model), Path(path)
    path.mkdir(parents=True, exist_ok=True)
    proto = import_protobuf().ModelProto.FromString(sp_model.read_bytes())
    pieces = [p.piece for p in proto.pieces]
    vocab = {piece: i for i, piece in enumerate(pieces)}
    backend = SpmConverter.build_tokenizer_from_spm_proto(proto, vocab)
    spec = proto.trainer_spec

    def piece(i: int) -> str | None:
        return pieces[i] if 0 <= i < len(pieces) else None

    bos, eos, unk, pad = piece(spec.bos_id), piece(spec.eos_id), piece(spec.unk_id), piece(spec.pad_id)
    if add_bos and bos is not None:
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, spec.bos_id)]
        )
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=bos, eos_token=eos, unk_token=unk,
                                  pad_token=pad, clean_up_tokenization_spaces=False)
    tok.save_pretrained(str(path))
    if sp_model.resolve() != (path / "tokenizer.model").resolve():
        shutil.copyfile(sp_model, path / "tokenizer.model")
    return path
