"""FastAPI dependencies for what the app's lifespan owns (tests override these)."""

from __future__ import annotations

from fastapi import Request

from serving.service import RouterService
from serving.settings import Settings


async def service_of(request: Request) -> RouterService:
    service: RouterService = request.app.state.service
    return service


async def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings
