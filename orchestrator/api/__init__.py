"""HTTP API of reimage: request schemas and the aiohttp application."""
