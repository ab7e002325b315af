"""Conversation memory for the assistant: per conversation id, bounded in turns and in size,
and in how many conversations are kept (the least recently used is forgotten first)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Turn:
    question: str
    intent: str
    segments: tuple[str, ...]
    answer: str

    def size(self) -> int:
        return len(self.question) + len(self.answer)


@dataclass
class _Conversation:
    turns: list[Turn] = field(default_factory=list)


class ConversationMemory:
    def __init__(self, max_turns: int, max_chars: int, max_conversations: int):
        self.max_turns, self.max_chars, self.max_conversations = (
            max_turns,
            max_chars,
            max_conversations,
        )
        self._conversations: OrderedDict[str, _Conversation] = OrderedDict()
        self._lock = threading.Lock()

    def turns(self, conversation_id: str) -> list[Turn]:
        with self._lock:
            c = self._conversations.get(conversation_id)
            return list(c.turns) if c else []

    def add(self, conversation_id: str, turn: Turn) -> None:
        with self._lock:
            c = self._conversations.pop(conversation_id, None) or _Conversation()
            c.turns.append(turn)
            del c.turns[: -self.max_turns]
            # The newest turn is kept even when it alone is over the size bound.
            while len(c.turns) > 1 and sum(t.size() for t in c.turns) > self.max_chars:
                c.turns.pop(0)
            self._conversations[conversation_id] = c
            while len(self._conversations) > self.max_conversations:
                self._conversations.popitem(last=False)

    def forget(self, conversation_id: str) -> None:
        with self._lock:
            self._conversations.pop(conversation_id, None)

    def __len__(self) -> int:
        return len(self._conversations)
