"""Public pages (no sign-in): the promises, the transparency report, the signed checkpoint."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response

from app.deps import NowDep, SessionDep
from app.log import reports
from app.log.keys import LogSigner
from app.web import charts
from app.web.render import VisitorDep, page_router, render

router = page_router(tags=["pages"])


@router.get("/promises")
def promises(request: Request, principal: VisitorDep) -> Response:
    """What Porchlight promises, in plain words, and how each promise can be checked."""
    return render(request, "public/promises.html", {"title": "Our promises"}, principal=principal)


@router.get("/transparency")
def transparency(
    request: Request, principal: VisitorDep, session: SessionDep, now: NowDep
) -> Response:
    """The quarterly transparency report, counted from the log, with a chart per completed
    quarter (the current one is published when it ends)."""
    quarters = list(reversed(reports.transparency_report(session, now)))
    return render(
        request,
        "public/transparency.html",
        {
            "title": "Transparency report",
            "quarters": [
                # Withheld counts get no bar: the template names them, with the reason.
                {"report": q, "bars": charts.bars(q.shown), "height": charts.height(len(q.shown))}
                for q in quarters
            ],
            "labels": charts.LABELS,
            "publication_note": reports.PUBLICATION_NOTE,
            "withholding_note": reports.WITHHOLDING_NOTE,
            "current": reports.current_quarter(now),
        },
        principal=principal,
    )


@router.get("/transparency/checkpoint")
def public_checkpoint(request: Request, principal: VisitorDep, session: SessionDep) -> Response:
    """The signed checkpoint, its cosignatures and the verifier key, for anyone."""
    signer: LogSigner = request.app.state.log_signer
    return render(
        request,
        "public/checkpoint.html",
        {
            "title": "Signed checkpoint",
            "log": reports.public_log(session, signer),
            "verifier_key": signer.verifier_key,
        },
        principal=principal,
    )
