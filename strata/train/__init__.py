"""Training: the Trainer wrapper, batches, targets, layers, resume, launch, records, preferences (DPO)."""
