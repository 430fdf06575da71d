"""Parameters of the ``synth.sympy`` kind, checked at submit (family names are looked up then)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class SympyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    families: list[str] = Field(["all"], description="family names, categories (中1 ... 数学IIIC) or 'all'")
    exclude: list[str] = Field(default_factory=list, description="families or categories to leave out")
    count: int | None = Field(None, ge=1, description="distinct problems over all shards (split evenly)")
    count_per_shard: int | None = Field(None, ge=1, description="distinct problems per shard")
    languages: list[Literal["ja", "en"]] = Field(["ja", "en"], min_length=1,
                                                 description="one row per problem and language")
    difficulty: list[int] = Field([1, 2, 3], min_length=1, description="difficulties drawn from (1, 2, 3)")
    seed: int = 0
    test_fraction: float = Field(0.0, ge=0.0, lt=1.0,
                                 description="share of problems (by hash of the problem) in the held-out test set")
    max_draws: int = Field(50, ge=1, description="draws per wanted problem before a family counts as exhausted")

    @field_validator("difficulty")
    @classmethod
    def _difficulty(cls, v: list[int]) -> list[int]:
        bad = [d for d in v if d not in (1, 2, 3)]
        if bad:
            raise ValueError(f"difficulty must be among 1, 2, 3; got {bad}")
        return sorted(set(v))

    @field_validator("families", "exclude")
    @classmethod
    def _known(cls, v: list[str], info) -> list[str]:
        if any("${" in f for f in v):
            return v
        from llmjobs.jobs.synth.sympy.registry import select

        if v:
            select(v)  # ValueError listing the known families and categories
        return v

    @model_validator(mode="after")
    def _check(self) -> SympyParams:
        if self.count is not None and self.count_per_shard is not None:
            raise ValueError("give count (over all shards) or count_per_shard, not both")
        if any("${" in f for f in self.families + self.exclude):
            return self
        from llmjobs.jobs.synth.sympy.registry import select

        select(self.families, self.exclude)  # the selection is not empty
        return self

    def shard_count(self, shard: int, num_shards: int) -> int:
        if self.count_per_shard is not None:
            return self.count_per_shard
        if self.count is None:
            return 1000
        base, extra = divmod(self.count, num_shards)
        return base + (1 if shard < extra else 0)
