"""One module per `finlora` verb, each with `register(parser)` and `run(args) -> int` (lora/cli/__init__.py).

    finlora VERB --help
"""
