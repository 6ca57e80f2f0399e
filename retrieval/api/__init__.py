"""The REST API, version 1 (``/api/v1/``): DRF views over the retrieval services and selectors.

Views are thin: they validate input with a serializer, call one service or selector, and
serialize the result. Every error body has one shape (see :mod:`retrieval.api.exceptions`).
"""
