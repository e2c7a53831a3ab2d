"""Export stage: merged HF model, GGUF conversion and quantization, fidelity checks, adapter GGUF."""
