"""Code hemalite did not write: generated from other projects' schemas (see each header)."""
