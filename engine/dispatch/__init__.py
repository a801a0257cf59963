"""The send pipeline: claim → compose → suppress → shape → sign → relay → record."""
