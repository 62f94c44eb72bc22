from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from files.services import file_signed_url
from knowledge.selectors import document_get_for_reader


@login_required
@require_GET
def document_source(request: HttpRequest, document_id: str) -> HttpResponse:
    """Where a citation leads: the cited passage with its document, page and heading, and the original file
    (a short-lived signed link, opening PDFs at the page)."""
    document = document_get_for_reader(document_id=document_id, user=request.user)
    if document is None:
        raise Http404("No such document.")
    chunk = None
    chunk_id = request.GET.get("chunk", "")
    if chunk_id.isdigit():
        chunk = document.chunks.filter(pk=int(chunk_id), live=True).first()
    page = chunk.page if chunk else None
    download = file_signed_url(stored_file=document.file)
    if page and document.file.content_type == "application/pdf":
        download += f"#page={page}"
    context = {"document": document, "chunk": chunk, "page": page, "download": download}
    return render(request, "knowledge/source.html", context)
