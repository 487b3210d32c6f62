"""A vector store or file that does not exist, or that the caller may not read, is a 404, as in OpenAI's API.

Llama Stack 0.7.3 answers both with 400 on every /v1/vector_stores route, for two reasons fixed here:
- `CommonRoutingTableImpl.assert_action_allowed` raises a bare ValueError("Vector_store '...' not found") when the
  store is unknown or hidden from the caller by the access policy (both look the same, so nothing leaks);
- the server's `global_exception_handler` turns any ResourceNotFoundError under /v1/vector_stores into a 400
  (a choice made for its own test suite).
`install()` runs when the stack loads our providers, before the server registers its exception handlers.
"""

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from llama_stack_api import VectorStoreNotFoundError
from llama_stack_api.common.errors import OpenAIErrorResponse, ResourceNotFoundError

_installed = False


def install() -> None:
    global _installed
    if _installed:
        return
    from llama_stack.core.routing_tables.common import CommonRoutingTableImpl
    from llama_stack.core.server import server

    assert_action_allowed = CommonRoutingTableImpl.assert_action_allowed
    exception_handler = server.global_exception_handler

    async def assert_store_found(self: Any, action: Any, type: str, identifier: str) -> None:
        if type == "vector_store" and await self.get_object_by_identifier(type, identifier) is None:
            raise VectorStoreNotFoundError(identifier)
        await assert_action_allowed(self, action, type, identifier)

    async def not_found_is_404(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, ResourceNotFoundError):
            return JSONResponse(status_code=404, content=OpenAIErrorResponse.from_message(str(exc)).to_dict())
        return await exception_handler(request, exc)

    CommonRoutingTableImpl.assert_action_allowed = assert_store_found  # type: ignore[method-assign]
    server.global_exception_handler = not_found_is_404
    _installed = True
