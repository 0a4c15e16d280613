"""Settings of the knowledge pool that the platform's ``Settings`` does not carry (yet)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class KnowledgeSettings(BaseSettings):
    """``MLAAS_KNOWLEDGE_*`` environment variables of the process that holds the pool."""

    model_config = SettingsConfigDict(env_prefix="MLAAS_KNOWLEDGE_", extra="ignore")

    index_shards: int = Field(
        default=1, ge=1, le=64,
        description="Index shard actors per tenant; 1 keeps the index in the pool's process "
                    "(and its file). Above 1 each tenant's vectors are spread over that many "
                    "actors, searched in parallel and rebuilt from the stored embeddings at start.")
    shard_num_cpus: float = Field(default=0.05, gt=0, description="Logical CPU per shard actor")
