"""The API over real PostgreSQL: create_app(settings) driven through the aiohttp test client."""
