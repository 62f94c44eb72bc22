"""Any change to a tenant or a domain invalidates the host -> tenant lookups of every process: at once, and
again when the transaction commits (a process may have read the old row in between)."""

from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from nexent_site.tenancy import tenants_changed
from tenants.models import Domain, Tenant


@receiver(post_save, sender=Tenant)
@receiver(post_delete, sender=Tenant)
@receiver(post_save, sender=Domain)
@receiver(post_delete, sender=Domain)
def tenant_or_domain_changed(**kwargs: object) -> None:
    tenants_changed()
    transaction.on_commit(tenants_changed)
