"""The HTTP service: `app` (composition root), `appkeys`, the `inputs` layer, `routes` and
`openapi`, `problems`, `middleware`, `server` (aiohttp's own edge), and `api/` (one module per
resource)."""
