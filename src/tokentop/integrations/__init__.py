"""Code that runs inside other programs (the LiteLLM proxy), not in tokentop."""
