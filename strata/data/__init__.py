"""Data stage: PDF text, pretest, chunking, dataset, question/answer synthesis, archive."""
