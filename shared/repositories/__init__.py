"""All SQL lives here, one module per domain; repositories flush, never commit."""
