"""The OpenAI-compatible endpoints under /v1/ on every tenant domain: `GET /v1/models`, `GET /v1/models/<id>`
and `POST /v1/chat/completions` (see api/openai_compat.py for the protocol). Async views: a streamed
answer, or a wait for one, holds no thread while the agent works in a Celery worker. Every hop to the
database enters the tenant's schema itself (`run_in_tenant`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from api.agent_calls import agent_get_callable, agents_callable, run_wait
from api.openai_compat import (
    OpenAIError,
    chat_completion_start,
    chat_completion_start_once,
    chat_request_parse,
    completion_chunks,
    completion_object,
    model_not_found,
    model_object,
    openai_caller,
    openai_error_from,
)
from api.scopes import Scope
from nexent_site.tenancy import run_in_tenant

View = Callable[..., Awaitable[HttpResponse]]


def openai_error_response(error: OpenAIError) -> JsonResponse:
    response = JsonResponse(error.body(), status=error.status)
    for name, value in error.headers.items():
        response[name] = value
    return response


def openai_endpoint(*methods: str) -> Callable[[View], View]:
    """Allow `methods` (any when none are named), and answer every failure in OpenAI's error format. API
    keys, not cookies, authenticate these requests: no CSRF token."""

    def decorator(view: View) -> View:
        @csrf_exempt
        @wraps(view)
        async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            try:
                if methods and request.method not in methods:
                    raise OpenAIError(
                        f"{request.method} is not allowed here; use {' or '.join(methods)}.",
                        status=405,
                        code="method_not_allowed",
                        headers={"Allow": ", ".join(methods)},
                    )
                return await view(request, *args, **kwargs)
            except Exception as exc:
                return openai_error_response(openai_error_from(exc))

        return wrapper

    return decorator


@openai_endpoint("GET")
async def models(request: HttpRequest) -> HttpResponse:
    tenant = request.tenant

    def listing() -> list[dict]:
        openai_caller(tenant=tenant, headers=request.headers, scope=Scope.CHAT)
        return [model_object(agent, owned_by=tenant.schema_name) for agent in agents_callable()]

    return JsonResponse({"object": "list", "data": await run_in_tenant(tenant, listing)})


@openai_endpoint("GET")
async def model(request: HttpRequest, model_id: str) -> HttpResponse:
    tenant = request.tenant

    def lookup() -> dict:
        openai_caller(tenant=tenant, headers=request.headers, scope=Scope.CHAT)
        agent = agent_get_callable(slug=model_id)
        if agent is None:
            raise model_not_found(model_id)
        return model_object(agent, owned_by=tenant.schema_name)

    return JsonResponse(await run_in_tenant(tenant, lookup))


@openai_endpoint("POST")
async def chat_completions(request: HttpRequest) -> HttpResponse:
    tenant = request.tenant
    key = await run_in_tenant(tenant, lambda: openai_caller(tenant=tenant, headers=request.headers, scope=Scope.CHAT))
    chat = chat_request_parse(body=request.body, content_type=request.content_type)
    idempotency_key = request.headers.get("Idempotency-Key", "").strip()
    if idempotency_key:
        run = await run_in_tenant(
            tenant,
            chat_completion_start_once,
            key=key,
            chat=chat,
            idempotency_key=idempotency_key,
            body=request.body,
        )
    else:
        run = await run_in_tenant(tenant, chat_completion_start, key=key, chat=chat)
    if chat.stream:
        response: HttpResponse = StreamingHttpResponse(
            completion_chunks(tenant=tenant, run=run, chat=chat), content_type="text/event-stream"
        )
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
    else:
        finished = await run_wait(tenant, run)
        # in a thread: the answer's finish reason is read from its stored steps
        response = JsonResponse(await run_in_tenant(tenant, completion_object, run=finished, chat=chat))
    response["X-Nexent-Run-Id"] = str(run.pk)
    return response


@openai_endpoint()
async def unknown_endpoint(request: HttpRequest) -> HttpResponse:
    raise OpenAIError(
        f"Invalid URL ({request.method} {request.path}): this server offers /v1/models and /v1/chat/completions.",
        status=404,
        code="unknown_url",
    )
