"""The web view's records pages (being built)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/ui")
