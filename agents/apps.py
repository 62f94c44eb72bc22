from django.apps import AppConfig


class AgentsConfig(AppConfig):
    name = "agents"

    def ready(self) -> None:
        from agents import signals  # noqa: F401
        from agents.services.providers import providers_token_key
        from nexent_site.tenancy import TASK_START_TOKEN_KEYS

        # a run's task looks its tenant's providers up as it starts: their token comes with the tenant's
        TASK_START_TOKEN_KEYS.append(providers_token_key)
