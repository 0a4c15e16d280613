"""A prompt-injection heuristic: weighted phrases that try to override a model's instructions.

A heuristic, not a classifier: it catches the common direct attacks ("ignore previous
instructions", "reveal your system prompt", fake system tags) at no latency cost.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SIGNALS: tuple[tuple[str, float, re.Pattern[str]], ...] = tuple(
    (name, weight, re.compile(pattern, re.IGNORECASE))
    for name, weight, pattern in (
        (
            "override_instructions",
            1.0,
            r"\b(ignore|disregard|forget|override)\b.{0,30}\b(previous|prior|above|earlier|all|your|the)"
            r"\b.{0,20}\b(instructions?|prompts?|rules|guidelines|directives)",
        ),
        (
            "reveal_system_prompt",
            1.0,
            r"\b(reveal|print|show|repeat|leak|output)\b.{0,30}\b(system|hidden|initial|original)\s+"
            r"(prompt|instructions?|message)",
        ),
        (
            "persona_jailbreak",
            1.0,
            r"\b(you are now|act as|pretend to be)\b.{0,40}\b(DAN|jailbroken|unrestricted|unfiltered|"  # noqa: E501
            r"developer mode|no (rules|restrictions|limits))",
        ),
        ("do_anything_now", 1.0, r"\bdo anything now\b"),
        ("fake_role_tag", 0.7, r"(<\|?/?(system|im_start|im_end)\|?>|^\s*#{2,}\s*system\s*:)"),
        ("new_instructions", 0.5, r"\b(new|updated|real)\s+instructions\s*:"),
        (
            "disable_safety",
            0.7,
            r"\b(bypass|disable|turn off|ignore)\b.{0,20}\b(safety|guardrails?|filters?|moderation)",  # noqa: E501
        ),
    )
)
THRESHOLD = 1.0


@dataclass(frozen=True)
class InjectionVerdict:
    score: float
    signals: tuple[str, ...]

    @property
    def detected(self) -> bool:
        return self.score >= THRESHOLD


def assess_injection(text: str) -> InjectionVerdict:
    """The summed weight of the signals present in ``text``."""
    hits = tuple(name for name, _, pattern in _SIGNALS if pattern.search(text))
    score = sum(weight for name, weight, _ in _SIGNALS if name in hits)
    return InjectionVerdict(score=round(score, 2), signals=hits)
