"""Test helpers: a fake Hugging Face / Civitai / plain-file server and tiny-model factories."""
