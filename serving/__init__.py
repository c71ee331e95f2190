"""routebandit's edge: settings, the FastAPI app, the upstream client and the CLI."""

__all__: list[str] = []
