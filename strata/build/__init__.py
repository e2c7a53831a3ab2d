"""Build stage: PDFs to dataset, layered LoRA adapters, merged model and quantized GGUF."""
