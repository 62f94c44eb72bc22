from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from agents.models import ModelProvider
from knowledge.models import KnowledgeBase, SearchMode


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """Several files in one field (the pattern from Django's file-upload documentation)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("widget", MultipleFileInput())
        super().__init__(*args, **kwargs)

    def clean(self, data: Any, initial: Any = None) -> list:
        """Every file given; each is judged (empty, too large, wrong type) by the upload service, so one bad
        file is reported by name without refusing the others."""
        files = [item for item in (data if isinstance(data, list | tuple) else [data]) if item]
        if not files and self.required:
            raise ValidationError(self.error_messages["required"], code="required")
        return files


class KnowledgeBaseForm(forms.ModelForm):
    class Meta:
        model = KnowledgeBase
        fields = [
            "name",
            "slug",
            "description",
            "embedding_provider",
            "chunk_strategy",
            "chunk_size",
            "chunk_overlap",
            "search_mode",
            "top_k",
            "fusion",
            "keyword_weight",
            "score_threshold",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["embedding_provider"].queryset = ModelProvider.objects.filter(kind="embedding")

    def clean_embedding_provider(self) -> ModelProvider:
        """The provider must tell its embedding size now (asked over the network when not yet known), so a
        knowledge base never starts without its dimension."""
        from knowledge.services.bases import provider_dimension

        provider = self.cleaned_data["embedding_provider"]
        if self.instance.pk is None or provider.pk != self.instance.embedding_provider_id:
            try:
                provider_dimension(provider)
            except ValidationError as exc:
                raise ValidationError(exc.message_dict["embedding_provider"]) from None
        return provider


class DocumentUploadForm(forms.Form):
    files = MultipleFileField(
        label="Files",
        help_text="PDF, Word, PowerPoint, Excel, CSV, HTML, Markdown, text or JSON. Several at once are fine.",
    )


class RetrievalTestForm(forms.Form):
    query = forms.CharField(max_length=2000, widget=forms.TextInput(attrs={"size": 80, "autofocus": True}))
    mode = forms.ChoiceField(choices=[("", "Knowledge base default"), *SearchMode.choices], required=False)
    top_k = forms.IntegerField(min_value=1, max_value=50, required=False, label="Top k")
    score_threshold = forms.FloatField(min_value=0, max_value=1, required=False, label="Score threshold")
