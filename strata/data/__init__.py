"""Data steps: PDF text, pretest, chunking, the dataset, synthesis, user datasets, archive."""
