"""Releases: publish the build pod's GGUF, adapters and QA results to a store; pull them verified on any serving pod."""
