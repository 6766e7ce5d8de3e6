"""ktk-arrow."""
