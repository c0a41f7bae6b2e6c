"""Typed models (pydantic), generated JSON Schemas (``json/``) and reference SQL (``sql/``)."""
