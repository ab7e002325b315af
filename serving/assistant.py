"""The ``assistant`` predictor: ``POST /v1/models/assistant:predict`` answers a business question.

Body: ``{"question": "...", "conversation_id": "..."}`` (or KServe V1's ``{"instances": [that]}``).
The answer's figures are computed by ``retention.insights.assistant`` from the production
release's segments; a bad field is a 400 naming it. Asking runs in a worker thread: with
``insights.assistant.use_llm`` an answer is a generation of a few seconds.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from kserve import Model
from kserve.errors import InvalidInput

from retention.config import Profile
from retention.insights.assistant import Assistant, parse_request
from retention.store.model_store import ModelStore

log = logging.getLogger(__name__)

ASSISTANT = "assistant"
SEGMENTS = "segments"  # the catalogue model the assistant reads


class AssistantModel(Model):
    def __init__(self, profile: Profile, segments_dir: str | Path | None = None):
        super().__init__(ASSISTANT)
        self.profile = profile
        self.segments_dir = Path(segments_dir) if segments_dir else None
        self.assistant: Assistant | None = None

    def load(self) -> bool:
        d = self.segments_dir or ModelStore(self.profile.model_store).resolve(SEGMENTS)
        phraser = None
        if self.profile.insights.assistant.use_llm:
            from retention.insights.narratives import Phraser

            phraser = Phraser(self.profile.writer.model, self.profile.seed)
        self.assistant = Assistant.from_dir(d, self.profile, phraser)
        self.ready = True
        return True

    async def predict(self, payload: Any, headers=None, response_headers=None) -> dict[str, Any]:
        try:
            req = parse_request(payload, self.profile.insights.assistant)
        except ValueError as err:
            raise InvalidInput(str(err)) from None
        assert self.assistant is not None  # ready only once loaded
        answer = await asyncio.to_thread(self.assistant.ask, req.conversation_id, req.question)
        return answer.to_dict()


def build_assistant(profile: Profile, segments_dir: str | Path | None = None) -> AssistantModel:
    """Loaded when the release has segments; otherwise registered unready (503), and logged."""
    m = AssistantModel(profile, segments_dir)
    try:
        m.load()
    except (LookupError, OSError, KeyError, ValueError) as err:
        log.error("assistant did not load: %s", err)
        m.ready = False
    return m
