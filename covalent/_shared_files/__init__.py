"""Covalent's module paths for shared classes, kept so documented imports work."""
