"""Parameters of the ``data.prepare`` kind, checked at submit: each source's fields are looked up in its
first row then (a source whose path still holds ``${...}`` is an upstream output and is checked in the job)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class SourceFields(BaseModel):
    """Which field of a row holds what. A row gives either ``messages`` (chat turns, used as they are) or a
    ``prompt`` plus any of ``reasoning`` (goes inside <think>), ``answer`` and ``response`` (the whole reply)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str | None = "problem"
    reasoning: str | None = None
    answer: str | None = None
    response: str | None = None
    messages: str | None = None
    language: str | None = None  # a per-row language field, else the source's language


class Source(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(..., description="JSONL, JSON, TSV, or a directory of JSONL files (e.g. a synth step's train/)")
    name: str | None = Field(None, description="shown in the stats (default: the file name)")
    weight: float = Field(1.0, gt=0, description="2.0 = every row twice, 0.5 = a random half (seeded)")
    language: str = Field("und", description="language tag for the rows")
    fields: SourceFields = Field(default_factory=SourceFields)
    columns: list[str] | None = Field(None, description="column names of a headerless TSV")
    limit: int | None = Field(None, ge=1)

    @property
    def label(self) -> str:
        return self.name or Path(self.path).name

    @model_validator(mode="after")
    def _fields_exist(self) -> Source:
        if "${" in self.path:
            return self
        from llmjobs.jobs.data.sources import check_fields

        check_fields(self)  # ValueError naming the missing field and the fields present
        return self


class EvalSet(BaseModel):
    """An evaluation set to protect: every n-gram of its problems is kept out of the training data."""

    model_config = ConfigDict(extra="forbid")

    path: str
    preset: str | None = Field(None, description="eval data preset: mgsm_ja, math500, gsm8k")
    field: str | None = Field(None, description="the problem field (default: the preset's, else 'problem')")


class PrepareParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sources: list[Source] = Field(..., min_length=1)
    template: Literal["think", "ja_instruction", "chat"] = Field(
        "think", description="think: <think>reasoning</think> + final answer; ja_instruction: the 指示/応答 "
        "format ending in 最終的な回答; chat: prompt and response as they are")
    prompt_template: str | None = Field(
        None, description="wrap the prompt: an eval template name (think_boxed, ja_instruction) or a string with "
        "{problem} (default: plain for think/chat, the eval's ja_instruction prompt for ja_instruction)")
    answer_format: str = Field("\\boxed{{answer}}", description="the final answer after </think>; {answer} is "
                               "replaced")
    system: str | None = None
    tokenizer: str | None = Field(None, description="local tokenizer directory of the target model")
    max_tokens: int | None = Field(None, ge=1, description="drop rows longer than this (needs tokenizer)")
    max_chars: int | None = Field(None, ge=1, description="drop rows longer than this many characters")
    dedup: Literal["none", "exact", "near"] = Field("near", description="near includes exact")
    dedup_on: Literal["text", "prompt"] = Field("text", description="compare whole conversations or prompts only")
    near_threshold: float = Field(0.8, gt=0, le=1, description="estimated Jaccard similarity counted as a "
                                  "near duplicate (MinHash over character 5-grams)")
    decontaminate: list[EvalSet] = Field(default_factory=list)
    ngram: int = Field(13, ge=3, description="n-gram length for decontamination (words; CJK characters count "
                       "one each)")
    shuffle: bool = True
    seed: int = 0
    dev_fraction: float = Field(0.0, ge=0, lt=1, description="share of rows (by hash) held out as dev")

    @model_validator(mode="after")
    def _check(self) -> PrepareParams:
        if self.max_tokens is not None and self.tokenizer is None:
            raise ValueError("max_tokens needs a tokenizer (a local directory of the target model's tokenizer); "
                             "or use max_chars")
        for ev in self.decontaminate:
            if "${" not in ev.path and not Path(ev.path).exists():
                raise ValueError(f"decontaminate: {ev.path}: file not found")
        return self
