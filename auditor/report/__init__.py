"""Rendering: figures from result objects, then JSON, HTML (Jinja2) and PDF (WeasyPrint)."""
