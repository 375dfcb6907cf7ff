"""The code under test: an agent that writes a short profile of a person.

Nothing here knows about tests or cassettes: the code calls `cached_agent_run` as it does in production.
"""

from __future__ import annotations

from pydantic import BaseModel
from pydantic_ai import Agent

from pyai_caching import cached_agent_run

MODEL = "openai:gpt-4o-mini"


class Profile(BaseModel):
    """What the agent returns; validated on every run, replayed or not."""

    name: str
    born: int
    known_for: str


profile_agent = Agent(
    MODEL,
    output_type=Profile,
    instructions="Write a short, factual profile of the person the user names.",
    defer_model_check=True,  # build the OpenAI model on first use, not at import
)


async def make_profile(name: str) -> Profile:
    """A profile of `name`, answered from the cache when the same request was made before."""
    profile: Profile = await cached_agent_run(profile_agent, f"Profile of {name}", task_name="make_profile")
    return profile
