"""strata: PDFs to layered LoRA adapters and a quantized GGUF, served hot-swappable by llama.cpp."""

__version__ = "0.1.0"
