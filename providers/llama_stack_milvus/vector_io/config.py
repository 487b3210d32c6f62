"""Configuration of the inline (Milvus Lite file) and remote (Milvus server, Zilliz Cloud) providers."""

from typing import Any, Literal

from llama_stack.core.datatypes import VectorStoresConfig
from llama_stack.core.storage.datatypes import KVStoreReference
from pydantic import BaseModel, Field, SecretStr, field_validator

ConsistencyLevel = Literal["Strong", "Bounded", "Session", "Eventually"]
# "auto" picks per backend: HNSW where it exists (Lite 3.x, servers), FLAT on Lite 2.5 (its only fast choice).
IndexType = Literal["auto", "HNSW", "FLAT", "IVF_FLAT", "AUTOINDEX"]
KeywordAnalyzer = Literal["english", "standard"]


class MilvusCommonConfig(BaseModel):
    persistence: KVStoreReference = Field(description="KV store that keeps vector store registrations and files")
    consistency_level: ConsistencyLevel = Field(default="Strong", description="Milvus consistency level")
    index_type: IndexType = Field(default="auto", description="Dense vector index type")
    hnsw_m: int = Field(default=16, ge=4, le=64, description="HNSW graph degree (M)")
    hnsw_ef_construction: int = Field(default=200, ge=8, le=1024, description="HNSW efConstruction")
    # ef 128 lost 2 of 1,710 top-10 hits on pyfaq when 50 are fetched (nDCG@10 -0.006); 256 matched brute force.
    hnsw_ef_search: int = Field(default=256, ge=8, le=4096, description="HNSW ef at search time (raised to k)")
    # Stemming and stop words win on one of our sets and lose on the other (docs/performance.md, Keyword analyser):
    # not a default.
    keyword_analyzer: KeywordAnalyzer = Field(
        default="standard",
        description="How keyword (BM25) search splits text into terms, fixed per collection at its creation: "
        "standard (lower-cased words) or english (Milvus' English analyser: stemming and English stop words; "
        "Milvus 2.5+ servers and Milvus Lite 2.5; Milvus Lite 3.x has none: the stack refuses to start with it)",
    )
    collection_mode: Literal["per_store", "shared"] = Field(
        default="per_store",
        description="per_store: one collection per vector store; shared: one collection per embedding dimension "
        "with the store id as partition key, for thousands of stores (Milvus servers, Lite 3.x)",
    )
    shared_collection_prefix: str = Field(
        default="llama_stack_chunks", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,200}$", description="shared mode only"
    )
    request_timeout_s: float = Field(
        default=30.0, gt=0, le=3600, description="Longest a single Milvus call may take before the request fails"
    )
    # Embedding runs at ~30-60 chunks/s on a CPU: 10 MiB of text is ~20,000 chunks, minutes of work per file.
    max_file_mib: float = Field(
        default=10.0, gt=0, description="Largest file (MiB) a vector store ingests; larger ones are refused with 413"
    )
    # Long enough to ride out a stall, short enough that a dead replica's batch is taken over soon (see leases.py).
    lease_seconds: float = Field(
        default=15.0,
        ge=1,
        le=600,
        description="How long unfinished work (a batch, an attach) stays with a process that stopped renewing it",
    )
    # Injected by the stack's resolver from the run config's `vector_stores` section.
    vector_stores_config: VectorStoresConfig | None = None


class InlineMilvusConfig(MilvusCommonConfig):
    """Milvus Lite: a local data file (a directory with Lite 3.x), one process at a time."""

    db_path: str = Field(description="Path of the Milvus Lite data file; ~ is expanded")
    # One run.yaml cannot switch provider_type on an env var (the stack's ${env} syntax has no "else"), so the
    # together/vllm/deepseek distributions keep inline::milvus and hand MILVUS_URI/MILVUS_TOKEN in here.
    uri: str | None = Field(default=None, description="If set, use the Milvus server at this URI instead of db_path")
    token: SecretStr | None = Field(default=None, description="With uri: user:password or a Zilliz Cloud API key")

    def server_config(self) -> "RemoteMilvusConfig | None":
        """The remote config equivalent to this one when `uri` names a server, else None (use the Lite file)."""
        if not self.uri:
            return None
        common = self.model_dump(exclude={"db_path", "uri", "token"})
        return RemoteMilvusConfig(**common, uri=self.uri, token=self.token)

    @field_validator("db_path")
    @classmethod
    def _db_path_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("db_path must name a file, e.g. ~/.llama/milvus.db")
        if "://" in value:
            raise ValueError("db_path is a local path; for a Milvus server use remote::milvus with `uri`")
        return value

    @classmethod
    def sample_run_config(cls, __distro_dir__: str, **kwargs: Any) -> dict[str, Any]:
        return {
            "db_path": "${env.MILVUS_DB_PATH:=" + __distro_dir__ + "/milvus.db}",
            "persistence": {"namespace": "vector_io::milvus", "backend": "kv_default"},
        }


class RemoteMilvusConfig(MilvusCommonConfig):
    """A Milvus server (standalone, cluster) or Zilliz Cloud."""

    uri: str = Field(description="Milvus server URI, e.g. http://localhost:19530 or a Zilliz Cloud endpoint")
    token: SecretStr | None = Field(default=None, description="user:password or a Zilliz Cloud API key")
    db_name: str | None = Field(default=None, description="Milvus database name")
    secure: bool | None = Field(default=None, description="TLS on (implied by an https:// uri)")
    server_pem_path: str | None = Field(default=None, description="one-way TLS: the server certificate")
    server_name: str | None = Field(default=None, description="TLS: the name the server certificate is for")
    ca_pem_path: str | None = Field(default=None, description="two-way TLS: the CA certificate")
    client_pem_path: str | None = Field(default=None, description="two-way TLS: the client certificate")
    client_key_path: str | None = Field(default=None, description="two-way TLS: the client key")

    @field_validator("uri", "token", "db_name", "server_name", mode="before")
    @classmethod
    def _keep_as_text(cls, value: Any) -> Any:
        # The stack turns env values that look like numbers or booleans into them (MILVUS_DB_NAME=2024).
        return str(value) if isinstance(value, int | float | bool) else value

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for pymilvus' MilvusClient (TLS options pass through unchanged)."""
        tls = ("secure", "server_pem_path", "server_name", "ca_pem_path", "client_pem_path", "client_key_path")
        kwargs = {name: getattr(self, name) for name in tls if getattr(self, name) is not None}
        kwargs["uri"] = self.uri
        kwargs["token"] = self.token.get_secret_value() if self.token else ""
        kwargs["db_name"] = self.db_name or ""
        kwargs["timeout"] = self.request_timeout_s
        return kwargs

    @field_validator("uri")
    @classmethod
    def _uri_has_scheme(cls, value: str) -> str:
        if not value.startswith(("http://", "https://", "tcp://", "grpc://", "unix:")):
            raise ValueError(f"uri must start with http:// or https:// (got {value!r})")
        return value

    @classmethod
    def sample_run_config(cls, __distro_dir__: str, **kwargs: Any) -> dict[str, Any]:
        return {
            "uri": "${env.MILVUS_URI:=http://localhost:19530}",
            "token": "${env.MILVUS_TOKEN:=}",
            "persistence": {"namespace": "vector_io::milvus_remote", "backend": "kv_default"},
        }
