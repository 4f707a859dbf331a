"""Efficient vision transformers from scratch: the package behind the book."""
