"""HTTP handlers, one module per resource; the only package importing aiohttp.web."""
