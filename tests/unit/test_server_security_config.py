"""Every distribution, as Llama Stack 0.7.3 reads it: loopback and no auth with the variables unset; the host,
oauth2_token auth (JWKS, issuer, audience, admin role) and TLS exactly as the variables say when they are set."""

from pathlib import Path

import pytest
import yaml
from llama_stack.core.datatypes import StackConfig
from llama_stack.core.stack import replace_env_vars

DISTRIBUTIONS = sorted((Path(__file__).resolve().parents[2] / "distributions").glob("*/run.yaml"))
VARIABLES = [
    "LLAMA_STACK_HOST",
    "LLAMA_STACK_AUTH_JWKS_URI",
    "LLAMA_STACK_AUTH_ISSUER",
    "LLAMA_STACK_AUTH_AUDIENCE",
    "LLAMA_STACK_AUTH_ADMIN_ROLE",
    "LLAMA_STACK_TLS_CERTFILE",
    "LLAMA_STACK_TLS_KEYFILE",
    "LLAMA_STACK_TLS_CAFILE",
]


def load(run_yaml: Path) -> StackConfig:
    return StackConfig(**replace_env_vars(yaml.safe_load(run_yaml.read_text())))


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("run_yaml", DISTRIBUTIONS, ids=lambda path: path.parent.name)
def test_unset_variables_mean_loopback_and_no_auth(run_yaml):
    server = load(run_yaml).server
    assert server.host == "127.0.0.1"
    assert server.auth is not None and server.auth.provider_config is None
    assert (server.tls_certfile, server.tls_keyfile, server.tls_cafile) == (None, None, None)
    assert server.quota is None


@pytest.mark.parametrize("run_yaml", DISTRIBUTIONS, ids=lambda path: path.parent.name)
def test_variables_switch_on_host_auth_and_tls(run_yaml, monkeypatch):
    monkeypatch.setenv("LLAMA_STACK_HOST", "0.0.0.0")
    monkeypatch.setenv("LLAMA_STACK_AUTH_JWKS_URI", "https://idp.example/jwks")
    monkeypatch.setenv("LLAMA_STACK_AUTH_ISSUER", "https://idp.example")
    monkeypatch.setenv("LLAMA_STACK_AUTH_AUDIENCE", "rag")
    monkeypatch.setenv("LLAMA_STACK_AUTH_ADMIN_ROLE", "rag-admin")
    monkeypatch.setenv("LLAMA_STACK_TLS_CERTFILE", "/etc/tls/cert.pem")
    monkeypatch.setenv("LLAMA_STACK_TLS_KEYFILE", "/etc/tls/key.pem")
    server = load(run_yaml).server
    auth = server.auth.provider_config
    assert server.host == "0.0.0.0"
    assert (auth.type, auth.jwks.uri, auth.issuer, auth.audience) == (
        "oauth2_token",
        "https://idp.example/jwks",
        "https://idp.example",
        "rag",
    )
    # Roles only from role claims: the stack's default mapping would make the `sub` claim a role too.
    assert auth.claims_mapping == {"roles": "roles", "realm_access.roles": "roles"}
    assert server.auth.access_policy[0].when == "user with rag-admin in roles"
    assert (server.tls_certfile, server.tls_keyfile) == ("/etc/tls/cert.pem", "/etc/tls/key.pem")
