"""The enrollment scan, one module per step; ``pipeline`` runs them in order."""
