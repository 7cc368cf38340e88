"""Prompt text: fill-in-the-middle prompts in a model's format, stop strings per language, and prompt
rows made from source files and HumanEval."""
