"""Who a piece of background work runs as. Llama Stack keeps the caller's identity (with auth on) and provider data
(the X-LlamaStack-Provider-Data header, e.g. an API key) in a context variable that tasks inherit from whoever
creates them. Work that outlives its request (a batch, an attach resumed after a restart) saves the context of the
request that started it, and runs in that context again, never in the context of whichever request comes next.
"""

from typing import Any

from llama_stack.core.datatypes import User
from llama_stack.core.request_headers import PROVIDER_DATA_VAR, RequestProviderDataContext

USER_KEY = "__authenticated_user"


def capture() -> dict[str, Any]:
    """The current request's context, as JSON-ready data."""
    data = PROVIDER_DATA_VAR.get() or {}
    user = data.get(USER_KEY)
    return {
        "provider_data": {key: value for key, value in data.items() if key != USER_KEY},
        "user": user.model_dump(mode="json") if user else None,
    }


def restore(saved: dict[str, Any] | None) -> RequestProviderDataContext:
    """A context manager that makes `saved` (from capture()) the current context; none saved is an empty one."""
    saved = saved or {}
    user = User.model_validate(saved["user"]) if saved.get("user") else None
    return RequestProviderDataContext(dict(saved.get("provider_data") or {}), user)
