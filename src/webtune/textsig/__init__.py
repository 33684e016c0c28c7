"""Text signatures shared by prepare (dedupe, word filters) and mix (decontamination): word hashes,
shingles and MinHash LSH bands, all numpy, all deterministic."""
