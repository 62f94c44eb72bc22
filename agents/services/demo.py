"""The demo tenant's ready-to-use agent."""

from __future__ import annotations

from agents.models import Agent, AgentMode
from agents.services.agents import agent_publish, agent_tool_add

DEMO_AGENT_SLUG = "assistant"


def demo_assistant_ensure() -> Agent:
    """Idempotent: a published tools-mode agent `assistant` with knowledge search and the date/time tool,
    on the tenant's default providers."""
    agent = Agent.objects.filter(slug=DEMO_AGENT_SLUG).first()
    if agent is None:
        agent = Agent.objects.create(
            name="Assistant",
            slug=DEMO_AGENT_SLUG,
            description="A general assistant that can search the handbook and knows today's date.",
            role_prompt="You are Nexent's demo assistant. Answer briefly and helpfully.",
            constraints_prompt="Use the knowledge_search tool for questions about Nexent; cite what you used.",
            greeting="Hi! I'm the demo assistant. Ask me about Nexent, or what day it is.",
            example_questions=["What is Nexent?", "What day is it today?"],
            mode=AgentMode.TOOLS,
            max_steps=4,
        )
        agent_tool_add(agent=agent, tool="knowledge_search", config={"knowledge_bases": ["handbook"]})
        agent_tool_add(agent=agent, tool="datetime")
    if agent.published_version is None:
        agent_publish(agent=agent, note="demo set-up")
    return agent
