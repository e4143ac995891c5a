"""The HTTP API (Starlette on uvicorn)."""
