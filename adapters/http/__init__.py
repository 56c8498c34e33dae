"""The ``http(s)://`` destination: POST (or PUT) each payload to a URL with httpx."""
