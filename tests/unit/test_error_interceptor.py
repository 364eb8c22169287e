"""The error interceptor over a real in-process gRPC server: one unexpected error is logged
once, under the one error id that the caller is given."""

from __future__ import annotations

import logging

import grpc
import pytest

from server.api.errors import ErrorInterceptor

pytestmark = pytest.mark.asyncio(loop_scope="session")

METHOD = "/aihub.test.v1.Boom/Explode"


async def _explode(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    raise RuntimeError("SELECT secret FROM training_jobs")


async def test_an_unexpected_error_is_logged_once_under_the_id_the_caller_gets(caplog):
    server = grpc.aio.server(interceptors=[ErrorInterceptor()])
    handler = grpc.method_handlers_generic_handler("aihub.test.v1.Boom", {"Explode": grpc.unary_unary_rpc_method_handler(_explode)})
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            with caplog.at_level(logging.ERROR, logger="server.api.errors"), pytest.raises(grpc.aio.AioRpcError) as raised:
                await channel.unary_unary(METHOD)(b"")
    finally:
        await server.stop(None)
    assert raised.value.code() == grpc.StatusCode.INTERNAL
    message = raised.value.details()
    assert "secret" not in message
    error_id = message.split("error id ")[1].split(";")[0]
    logged = [r for r in caplog.records if "unexpected error" in r.getMessage()]
    assert len(logged) == 1, [r.getMessage() for r in logged]
    assert error_id in logged[0].getMessage()
