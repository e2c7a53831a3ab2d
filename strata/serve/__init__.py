"""The serving appliance: llama.cpp behind an OpenAI-compatible API with runtime LoRA hot-swap."""
