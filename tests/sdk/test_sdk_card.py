"""Unit tests: the AgentCard and registration an agent builds from its decorated functions."""

from __future__ import annotations

import pytest
from mq9 import Agent
from mq9.agent import default_mailbox


def make_agent() -> Agent:
    agent = Agent(
        "translator", description="Translates text between languages", version="1.0.0",
        mailbox="agent.translator.inbox", max_concurrency=4, metadata={"team": "lang"},
    )  # fmt: skip

    @agent.skill(tags=["translate", "language"], examples=["translate hello to French"])
    async def translate(text: str, target: str = "fr") -> dict:
        """Translate text into the target language."""
        return {"text": text, "target": target}

    @agent.skill
    def detect_language(text: str) -> str:
        """Guess the language of a text.

        Uses a tiny word list.
        """
        return "en"

    @agent.tool()
    async def word_count(text: str) -> int:
        """Count the words of a text."""
        return len(text.split())

    return agent


def test_card_is_an_a2a_agent_card_with_one_entry_per_skill():
    card = make_agent().card()
    assert card["name"] == "translator"
    assert card["description"] == "Translates text between languages"
    assert card["version"] == "1.0.0"
    for key in ("url", "capabilities", "defaultInputModes", "defaultOutputModes", "protocolVersion"):
        assert key in card
    assert [s["id"] for s in card["skills"]] == ["translate", "detect_language"]
    translate = card["skills"][0]
    assert translate["name"] == "Translate"
    assert translate["description"] == "Translate text into the target language."
    assert translate["tags"] == ["translate", "language"]
    assert translate["examples"] == ["translate hello to French"]


def test_skill_description_is_the_first_paragraph_of_the_docstring():
    card = make_agent().card()
    assert card["skills"][1]["description"] == "Guess the language of a text."
    assert card["skills"][1]["name"] == "Detect language"


def test_registration_adds_mailbox_concurrency_heartbeat_and_schemas():
    body = make_agent().registration()
    assert body["mailbox"] == "agent.translator.inbox"
    assert body["max_concurrency"] == 4
    assert body["heartbeat_interval_ms"] == 5000
    assert body["metadata"]["team"] == "lang"
    schemas = body["metadata"]["mq9.schemas"]
    assert schemas["translate"]["input"]["required"] == ["text"]
    assert schemas["detect_language"]["output"] == {"type": "string"}


def test_tool_registration_carries_input_and_output_schemas():
    tool = make_agent().tools["word_count"]
    body = tool.registration()
    assert body["name"] == "word_count"
    assert body["description"] == "Count the words of a text."
    assert body["input_schema"]["properties"]["text"]["type"] == "string"
    assert body["output_schema"] == {"type": "integer"}


def test_skill_options_override_what_the_function_says():
    agent = Agent("a")

    @agent.skill(id="t2", name="Translate v2", description="Better translation")
    async def translate(text: str) -> str:
        """Ignored."""
        return text

    entry = agent.card()["skills"][0]
    assert (entry["id"], entry["name"], entry["description"]) == ("t2", "Translate v2", "Better translation")


def test_duplicate_skill_and_bad_names_are_refused():
    agent = make_agent()
    with pytest.raises(ValueError):

        @agent.skill(id="translate")
        async def again(text: str) -> str:
            return text

    with pytest.raises(ValueError):
        Agent("has.dot")
    with pytest.raises(ValueError):
        Agent("x").skill(id="bad id")(lambda: None)


def test_on_message_gives_an_agent_a_default_mailbox():
    agent = Agent("Order-Desk")

    @agent.on_message()
    async def inbox(msg) -> None: ...

    assert agent.mailbox == default_mailbox("Order-Desk") == "agent.order.desk.inbox"
    assert agent.registration()["mailbox"] == "agent.order.desk.inbox"


def test_declaring_agents_does_no_network_work():
    # nothing connects until start(): an agent with no broker anywhere is still fully declared
    agent = make_agent()
    assert agent.instance_id == ""
    assert not agent.client.is_connected
