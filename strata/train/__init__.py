"""Training stage: the Trainer wrapper, batches, roles, layers, resume, launch, records, pairs."""
