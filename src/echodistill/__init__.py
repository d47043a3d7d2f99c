"""EchoDistill: noise-robust post-training of audio LLMs with a clean-audio teacher inside GRPO."""

__version__ = "0.1.0"
