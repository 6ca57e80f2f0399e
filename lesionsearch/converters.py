"""Path converters. ``<id:...>`` is ``<int:...>`` bounded to what a database key can hold.

Django's ``int`` converter matches any run of digits, and a number past a 64-bit integer then
reaches the database: SQLite raises OverflowError (a 500) on ``/api/v1/studies/<30 digits>/``.
With at most 18 digits (below 2**63) such a path matches no URL and is answered 404 like any
other unknown id. The OpenAPI schema describes the parameter as an integer from 0 to ``MAX_ID``
(SPECTACULAR_SETTINGS["PATH_CONVERTER_OVERRIDES"]).
"""
from __future__ import annotations

from django.urls import register_converter
from django.urls.converters import IntConverter

MAX_ID = 10**18 - 1


class IdConverter(IntConverter):
    regex = "[0-9]{1,18}"


register_converter(IdConverter, "id")

#: For drf-spectacular: how an ``<id:...>`` path parameter looks in the schema.
ID_SCHEMA = {"type": "integer", "minimum": 0, "maximum": MAX_ID}
