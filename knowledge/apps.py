from django.apps import AppConfig


class KnowledgeConfig(AppConfig):
    name = "knowledge"

    def ready(self) -> None:
        from agents.tools.knowledge import knowledge_searcher_register
        from knowledge import checks  # noqa: F401 - registers the system checks
        from knowledge.services.search import agent_knowledge_search, knowledge_bases_existing

        knowledge_searcher_register(agent_knowledge_search, knowledge_bases_existing)
