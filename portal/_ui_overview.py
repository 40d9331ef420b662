"""The web view's overview for the government (being built); ``/ui/`` sends the other roles
to their own start page."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from portal._ui import render, ui_viewer
from portal._viewer import Viewer

router = APIRouter(prefix="/ui")


@router.get("/")
def start(request: Request, viewer: Annotated[Viewer, Depends(ui_viewer)]) -> Response:
    if viewer.sees_all:
        return render(request, "overview.html", viewer=viewer, title="nav.overview")
    if viewer.is_enterprise:
        return RedirectResponse(f"/ui/enterprises/{viewer.address}", status_code=303)
    return RedirectResponse("/ui/enterprises", status_code=303)
