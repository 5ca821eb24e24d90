"""Data pipeline: Megatron-format token files, source blending, the resumable data-parallel loader, the demo corpus."""
