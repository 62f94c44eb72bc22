"""The API's own endpoints: who am I (key, scopes, limits, this month's usage) and usage."""

from __future__ import annotations

from datetime import timedelta

from django.db import connection
from django.utils import timezone
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from agents.models import UsageRecord
from agents.selectors import usage_summary
from agents.services.usage import usage_month_tokens
from api.models import ApiKey
from api.permissions import request_scopes
from api.scopes import Scope
from api.serializers import MeSerializer, UsageQuerySerializer, UsageRowSerializer


class MeView(APIView):
    @extend_schema(responses=MeSerializer, summary="The caller: tenant, user, API key, scopes, limits, usage")
    def get(self, request: Request) -> Response:
        key = request.auth if isinstance(request.auth, ApiKey) else None
        tenant = request.tenant
        data = {
            "tenant": tenant.schema_name,
            "user": request.user.email,
            "role": request.user.role,
            "key": None
            if key is None
            else {
                "name": key.name,
                "prefix": key.prefix,
                "expires_at": key.expires_at,
                "last_used_at": key.last_used_at,
            },
            "scopes": sorted(request_scopes(request)),
            "limits": {
                "tenant_requests_per_minute": tenant.api_requests_per_minute,
                "tenant_monthly_tokens": tenant.monthly_token_budget,
                "key_requests_per_minute": key.requests_per_minute if key else 0,
                "key_monthly_tokens": key.monthly_token_limit if key else 0,
            },
            "usage": {
                "tenant_month_tokens": usage_month_tokens(),
                "key_month_tokens": usage_month_tokens(api_key_id=key.pk) if key else 0,
            },
        }
        return Response(MeSerializer(data).data)


class UsageView(APIView):
    """Token usage of finished runs. With the `admin` scope: the whole organisation's; otherwise the
    caller's own."""

    @extend_schema(
        parameters=[UsageQuerySerializer],
        responses=inline_serializer(
            "UsageReport",
            {
                "tenant": serializers.CharField(),
                "since": serializers.DateField(),
                "results": UsageRowSerializer(many=True),
            },
        ),
        summary="Token usage",
    )
    def get(self, request: Request) -> Response:
        query = UsageQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        records = UsageRecord.objects.all()
        if Scope.ADMIN not in request_scopes(request):
            records = records.filter(user_email=request.user.email)
        since = query.validated_data.get("since") or (timezone.now() - timedelta(days=30)).date()
        rows = usage_summary(records=records, group_by=query.validated_data["group_by"], since=since)
        return Response({"tenant": connection.schema_name, "since": since, "results": rows})
