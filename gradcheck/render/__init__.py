"""Renderers: pure functions from a Report to text. The CLI picks one and writes its output."""
