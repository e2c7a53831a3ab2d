"""Data stage: PDF text, pretest, chunking, the train/val dataset and the PDF archive."""
