"""Train stage: layered LoRA adapters on a base model (the Trainer wrapper, presets, batches, targets, layers on disk, resume, launch, records)."""
