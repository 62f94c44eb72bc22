"""Any save or delete of a model provider (admin, API, shell) invalidates every process's cached providers of its
tenant: at once, and again when the transaction commits (a process may have read the old row in between)."""

from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from agents.models import ModelProvider
from agents.services.providers import providers_changed, providers_token_key


@receiver(post_save, sender=ModelProvider)
@receiver(post_delete, sender=ModelProvider)
def provider_changed(**kwargs: object) -> None:
    token_key = providers_token_key()  # the saving tenant's, whichever schema is current at the commit
    providers_changed(token_key)
    transaction.on_commit(lambda: providers_changed(token_key))
