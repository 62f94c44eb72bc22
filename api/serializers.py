from __future__ import annotations

from typing import Any

from rest_framework import serializers


class StrictSerializerMixin:
    """Unknown fields are refused by name instead of silently ignored (a typo'd field would otherwise be
    lost without a word)."""

    def to_internal_value(self, data: Any) -> Any:
        if hasattr(data, "keys"):
            known = {name for name, field in self.fields.items() if not field.read_only}
            unknown = sorted(set(data.keys()) - known)
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)


class StrictSerializer(StrictSerializerMixin, serializers.Serializer):
    pass


class StrictModelSerializer(StrictSerializerMixin, serializers.ModelSerializer):
    pass


class MeSerializer(serializers.Serializer):
    tenant = serializers.CharField()
    user = serializers.EmailField()
    role = serializers.CharField()
    key = serializers.DictField(allow_null=True, help_text="The API key in use (null for a session)")
    scopes = serializers.ListField(child=serializers.CharField())
    limits = serializers.DictField()
    usage = serializers.DictField()


class UsageQuerySerializer(serializers.Serializer):
    group_by = serializers.ChoiceField(choices=["day", "agent", "user", "key"], default="day")
    since = serializers.DateField(required=False, help_text="First day to include (default: 30 days ago)")


class UsageRowSerializer(serializers.Serializer):
    day = serializers.CharField(required=False)
    agent = serializers.CharField(required=False)
    user = serializers.CharField(required=False)
    key = serializers.CharField(required=False)
    runs = serializers.IntegerField()
    tokens_in = serializers.IntegerField()
    tokens_out = serializers.IntegerField()
    tokens = serializers.IntegerField()
    estimated_tokens = serializers.IntegerField(
        help_text="Of `tokens`, those estimated from the text: their provider reported no usage"
    )
