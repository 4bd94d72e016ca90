"""finlora-axolotl: named LoRA recipes for financial LLMs, trained with Axolotl; one package per pipeline stage.

    finlora --help      # the command (lora/cli); docs/architecture.md draws the stages
"""
