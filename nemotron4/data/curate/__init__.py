"""Data curation before tokenization (`nemotron4 curate`): heuristic quality filters, an optional classifier,
exact and near (MinHash + LSH) deduplication across the sources of each category, per-stage report.

One module per job: `text` (normalisation, exact keys), `minhash` (signatures, band keys), `lsh` (the on-disk
partitioned LSH index, clusters), `filters` (Gopher / C4-style rules), `classifier` (fastText quality filter),
`config`, `report`, `pipeline` (the stages on an `nemotron4.data.engine.Engine`).
"""
