"""CLI subcommands, one module each; see nemotron4/cli.py."""

DTYPES = ("bfloat16", "float16", "float32")  # --dtype choices of generate and convert
