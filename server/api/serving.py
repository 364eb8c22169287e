"""The models in use, as TrainingService handlers: forecasts from a version (named by id or
alias), and the aliases themselves. A mixin of TrainingServicer (server.api.servicer), with
its engine; the forecasts run on Ray (server.execution.forecasts), never in this loop."""

from __future__ import annotations

import grpc
import pandas as pd

from client._gen.aihub.training.v1 import training_service_pb2 as pb
from server.api import auth
from server.api.convert import serving as convert
from server.api.convert.common import model_type_from_pb, parse_model_id
from server.api.errors import InvalidState, RequestError
from server.execution.forecasts import ModelServer
from storage import aliases, db, forecasts, models
from storage.records import ModelVersion
from trainers import forecasting
from trainers.spec import ModelType, TrainingSpec


def moved_by() -> str:
    """Who moves an alias, as its record says: the API key's id (or that no key was used)."""
    principal = auth.current()
    return principal.key_id or principal.describe()


class ModelServing:
    engine: db.Engine
    models_in_use: ModelServer

    async def _named_version(self, model_id: str, tenant_id: str, model_type: int, alias: str) -> tuple[ModelVersion, str]:
        """The version a request names: by ``model_id``, or by (tenant, model type, alias),
        resolved now; a deleted one is InvalidState (its artifact is gone)."""
        if model_id and alias:
            raise RequestError("alias", "names the version a second way: give model_id or alias, not both")
        if model_id:
            parsed = parse_model_id(model_id)
            async with db.transaction(self.engine, auth.scope_for(tenant_id)) as conn:
                version = await models.get(conn, parsed)
        elif alias:
            convert.check_alias(alias)
            kind = model_type_from_pb(model_type)
            if kind is None:
                raise RequestError("model_type", "is required with an alias: forecast or anomaly")
            scope = auth.scope_for(tenant_id, required=True)
            async with db.transaction(self.engine, scope) as conn:
                version = await aliases.resolve(conn, scope.single(), kind.value, alias)
        else:
            raise RequestError("model_id", "is required: the version's id, or tenant_id, model_type and alias")
        if version.deleted_at is not None:
            raise InvalidState(
                f"model version {version.version} was deleted; its artifact is gone", details={"model_id": str(version.model_id)}
            )
        return version, alias

    async def ForecastModelVersion(
        self, request: pb.ForecastModelVersionRequest, context: grpc.aio.ServicerContext
    ) -> pb.ForecastModelVersionResponse:
        version, alias, rows = await self.forecast_rows(request)
        return convert.forecast_to_pb(version, alias, rows)

    async def forecast_rows(self, request: pb.ForecastModelVersionRequest) -> tuple[ModelVersion, str, pd.DataFrame]:
        """The version a forecast request names, its alias, and the forecast's rows (timestamp,
        series_id, forecast, origin): what the gRPC answer and the REST answer are made of."""
        query = convert.forecast_query(request)
        version, alias = await self._named_version(request.model_id, request.tenant_id, request.model_type, request.alias)
        spec = TrainingSpec.from_dict(version.config, model_type=version.model_type)
        horizon = query.horizon_hours or spec.forecast_horizon_hours
        forecasting.check_request(spec, horizon)
        if query.series is not None:
            forecasting.check_size(len(query.series), horizon)
        rows = await self.models_in_use.forecast(
            version, spec, horizon_hours=horizon, origin=query.origin, series=query.series, inputs=query.inputs,
            history_hours=query.history_hours,
        )  # fmt: skip
        return version, alias, rows

    async def DetectModelVersion(
        self, request: pb.DetectModelVersionRequest, context: grpc.aio.ServicerContext
    ) -> pb.DetectModelVersionResponse:
        start, end, rows = convert.detect_query(request)
        version, _ = await self._named_version(request.model_id, request.tenant_id, pb.MODEL_TYPE_UNSPECIFIED, "")
        spec = TrainingSpec.from_dict(version.config, model_type=version.model_type)
        if spec.model_type != ModelType.ANOMALY:
            raise convert.refused(
                "model_id", f"is a {spec.model_type.value} version: only an anomaly model detects (forecast with :forecast)"
            )
        if rows is not None:
            start = start or rows["timestamp"].min().to_pydatetime()
            end = end or rows["timestamp"].max().to_pydatetime()
        assert start is not None and end is not None  # noqa: S101 - detect_query requires them without rows
        found, threshold = await self.models_in_use.detect(version, spec.with_window(start, end), rows)
        if len(found) > convert.MAX_POINTS:
            raise convert.refused("end", f"the window holds {len(found)} rows; at most {convert.MAX_POINTS} are scored in one request")
        return convert.detect_to_pb(version, found, threshold)

    async def ListForecasts(self, request: pb.ListForecastsRequest, context: grpc.aio.ServicerContext) -> pb.ListForecastsResponse:
        filters, size, offset = convert.forecasts_query(request)
        async with db.transaction(self.engine, auth.scope_for(request.tenant_id, required=auth.current().open)) as conn:
            found = await forecasts.list_points(conn, limit=size + 1, offset=offset, **filters)
        return convert.forecasts_to_pb(found, size, offset)

    async def SetModelAlias(self, request: pb.SetModelAliasRequest, context: grpc.aio.ServicerContext) -> pb.ModelAlias:
        name = convert.check_alias(request.alias)
        reason = convert.reason(request.reason)
        parsed = parse_model_id(request.model_id)
        async with db.transaction(self.engine, auth.scope_for(request.tenant_id)) as conn:
            version = await models.get(conn, parsed)
            if version.deleted_at is not None:
                raise InvalidState(
                    f"model version {version.version} was deleted; an alias cannot point at it", details={"model_id": str(version.model_id)}
                )
            found = await aliases.point(conn, version, name, moved_by=moved_by(), reason=reason)
        return convert.alias_to_pb(found)

    async def DeleteModelAlias(self, request: pb.DeleteModelAliasRequest, context: grpc.aio.ServicerContext) -> pb.ModelAlias:
        name = convert.check_alias(request.alias)
        kind = convert.model_type_from_text(request.model_type)
        reason = convert.reason(request.reason)
        scope = auth.scope_for(request.tenant_id, required=True)
        assert kind is not None  # noqa: S101 - required above
        async with db.transaction(self.engine, scope) as conn:
            found = await aliases.remove(conn, scope.single(), kind.value, name, moved_by=moved_by(), reason=reason)
        return convert.alias_to_pb(found)

    async def ListModelAliases(self, request: pb.ListModelAliasesRequest, context: grpc.aio.ServicerContext) -> pb.ListModelAliasesResponse:
        kind = convert.model_type_from_text(request.model_type, required=False)
        async with db.transaction(self.engine, auth.scope_for(request.tenant_id, required=auth.current().open)) as conn:
            found = await aliases.list_aliases(conn, kind.value if kind else None)
        return convert.aliases_to_pb(found)
