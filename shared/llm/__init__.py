"""LLM providers behind one small interface, plus prompt assembly."""
