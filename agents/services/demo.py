"""The demo tenant's ready-to-use agents."""

from __future__ import annotations

from agents.models import Agent, AgentMode
from agents.services.agents import agent_publish, agent_tool_add

DEMO_AGENT_SLUG = "assistant"
DEMO_HANDBOOK_AGENT_SLUG = "handbook"


def demo_agents_ensure(*, handbook: str | None) -> list[Agent]:
    """Idempotent, on the tenant's default providers:
    - `handbook`, a chat-mode agent answering from the `handbook` knowledge base with its sources: one model call,
      quick even on the bundled model (only when there is a `handbook` knowledge base: its slug);
    - `assistant`, a tools-mode agent with knowledge search and the date/time tool (the bundled model is slow
      and clumsy at choosing tools: a real provider suits it)."""
    search = {"knowledge_search": {"knowledge_bases": [handbook]}} if handbook else {}
    agents = []
    if handbook:
        agents.append(
            _ensure(
                DEMO_HANDBOOK_AGENT_SLUG,
                tools=search,
                name="Handbook",
                description="Answers questions about Nexent from its handbook, with sources.",
                role_prompt="You answer questions about Nexent from its handbook.",
                constraints_prompt="Answer in at most three sentences, from the passages you are given.",
                max_tokens=300,
                greeting="Ask me about Nexent: I answer from its handbook and show my sources.",
                example_questions=["What is Nexent?", "How do I run the tests?"],
                mode=AgentMode.CHAT,
            )
        )
    agents.append(
        _ensure(
            DEMO_AGENT_SLUG,
            tools={**search, "datetime": {}},
            name="Assistant",
            description="A general assistant that can search the handbook and knows today's date.",
            role_prompt="You are Nexent's demo assistant. Answer briefly and helpfully.",
            constraints_prompt="Use the knowledge_search tool for questions about Nexent; cite what you used.",
            greeting="Hi! I'm the demo assistant. Ask me about Nexent, or what day it is.",
            example_questions=["What day is it today?", "What is Nexent?"],
            mode=AgentMode.TOOLS,
            max_steps=4,
        )
    )
    return agents


def _ensure(slug: str, *, tools: dict[str, dict], **fields: object) -> Agent:
    """The agent `slug`, created with `fields` and `tools` (tool → config) and published, unless it exists."""
    agent = Agent.objects.filter(slug=slug).first()
    if agent is None:
        agent = Agent.objects.create(slug=slug, **fields)
        for tool, config in tools.items():
            agent_tool_add(agent=agent, tool=tool, config=config)
    if agent.published_version is None:
        agent_publish(agent=agent, note="demo set-up")
    return agent
