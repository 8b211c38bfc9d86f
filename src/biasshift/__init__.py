"""biasshift: measure how inference acceleration changes the demographic bias of an LLM."""

__version__ = "0.1.0"
