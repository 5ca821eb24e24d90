"""The run directory keeps the tokenizer its token files were made with: `RUN/tokenizer.model`, with its SHA-256 in
`RUN/tokenizer.model.sha256`, so that generate, eval and convert find it from the run alone (`find_tokenizer`, which
verifies the digest). The tokenizer is the one `nemotron4 prepare` recorded beside the token files."""

from __future__ import annotations

import shutil
from pathlib import Path

from nemotron4.errors import ConfigError
from nemotron4.train.config import JobConfig
from nemotron4.weights import DIGEST_SUFFIX, TOKENIZER_FILE, tokenizer_digest

__all__ = ["data_tokenizer", "keep_tokenizer"]


def data_tokenizer(job: JobConfig, token_files: list[tuple[str, str]]) -> Path | None:
    """The tokenizer `prepare` recorded for the token files (None when none recorded one); a ConfigError naming both
    keys when two token files were made with different tokenizers."""
    from nemotron4.data.prepare import recorded_tokenizer_size

    found: tuple[str, Path, str] | None = None
    for where, prefix in token_files:
        recorded = recorded_tokenizer_size(prefix)
        if recorded is None:
            continue
        path = Path(recorded[0]).resolve()
        if found is None:
            found = (where, path, tokenizer_digest(path))
        elif path != found[1] and tokenizer_digest(path) != found[2]:
            raise ConfigError(f"{where} was made with tokenizer {path} but {found[0]} with {found[1]}: one run "
                              "trains on one tokenizer's ids; re-run `nemotron4 prepare` with the same tokenizer")
    return None if found is None else found[1]


def keep_tokenizer(run_dir: Path, tokenizer: Path | None) -> Path | None:
    """Copy `tokenizer` into `run_dir` with its digest; a ConfigError when the run already keeps another one."""
    if tokenizer is None:
        return None
    dest, digest = run_dir / TOKENIZER_FILE, tokenizer_digest(tokenizer)
    sidecar = run_dir / (TOKENIZER_FILE + DIGEST_SUFFIX)
    if dest.is_file() and sidecar.is_file():
        if sidecar.read_text().strip() != digest:
            raise ConfigError(f"{run_dir} was trained with another tokenizer than {tokenizer} (the token files'): "
                              "use a new --run-dir, or the token files made with the run's own tokenizer")
        return dest
    tmp = run_dir / (TOKENIZER_FILE + ".tmp")
    shutil.copyfile(tokenizer, tmp)
    tmp.chmod(0o644)
    tmp.replace(dest)
    sidecar.write_text(digest + "\n")
    return dest
