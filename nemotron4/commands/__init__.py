"""Subcommands of the `nemotron4` CLI: one module each, with `add_parser(subparsers)`."""
