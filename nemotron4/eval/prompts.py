"""Prompt templates shared by evaluation and by the benchmark-style data of continued training.

The continued-training phase (docs/paper.md section 5) adds a small amount of benchmark-style examples; writing them
with the very template the evaluation uses is what lets that phase teach the format. Keep the two in one place.
"""

from __future__ import annotations

from collections.abc import Sequence

# ISO 639 code (as in gettext locale names, e.g. "pt_BR" -> "pt") -> English name. Unknown codes print as given.
LANGUAGE_NAMES: dict[str, str] = {
    "en": "English", "de": "German", "fr": "French", "es": "Spanish", "it": "Italian", "pt": "Portuguese",
    "nl": "Dutch", "sv": "Swedish", "da": "Danish", "nb": "Norwegian", "fi": "Finnish", "pl": "Polish",
    "cs": "Czech", "sk": "Slovak", "sl": "Slovenian", "hr": "Croatian", "sr": "Serbian", "ro": "Romanian",
    "hu": "Hungarian", "tr": "Turkish", "ru": "Russian", "uk": "Ukrainian", "bg": "Bulgarian", "el": "Greek",
    "ja": "Japanese", "ko": "Korean", "zh": "Chinese", "vi": "Vietnamese", "id": "Indonesian", "ar": "Arabic",
    "he": "Hebrew", "fa": "Persian", "hi": "Hindi", "ca": "Catalan", "eu": "Basque", "gl": "Galician",
    "et": "Estonian", "lt": "Lithuanian", "lv": "Latvian", "eo": "Esperanto", "ga": "Irish", "be": "Belarusian",
}


def language_name(code: str) -> str:
    """'pt_BR' -> 'Portuguese (BR)'; 'de' -> 'German'; unknown codes are returned as they are."""
    base, _, region = code.replace("-", "_").partition("_")
    name = LANGUAGE_NAMES.get(base.lower(), code)
    return f"{name} ({region})" if region and name != code else name


def translation_example(src_lang: str, tgt_lang: str, source: str, target: str | None = None) -> str:
    """One example: "English: <source>\\nGerman: <target>" (target None: the prompt ends after "German:")."""
    head = f"{language_name(src_lang)}: {source.strip()}\n{language_name(tgt_lang)}:"
    return head if target is None else f"{head} {target.strip()}"


def translation_prompt(
    src_lang: str, tgt_lang: str, shots: Sequence[tuple[str, str]], source: str
) -> str:
    """A k-shot prompt (the paper's FLORES evaluation uses 8 shots): solved examples separated by blank lines,
    then the source to translate. The answer is what follows, up to the first newline."""
    parts = [translation_example(src_lang, tgt_lang, s, t) for s, t in shots]
    parts.append(translation_example(src_lang, tgt_lang, source))
    return "\n\n".join(parts)
