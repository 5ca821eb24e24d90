"""CLI subcommands, one module each; see nemotron4/cli.py."""
