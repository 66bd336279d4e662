"""Covalent's module paths for electrons and lattices, kept so documented imports work."""
