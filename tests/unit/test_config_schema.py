"""The config is declared once (trainers.spec.model, pydantic): the API's TrainingConfig
message carries the same fields by the same names, so the proto <-> spec mapping is
json_format's and a new field is added to the model and the proto only. The model refuses
what it does not declare, at the guide's paths."""

from __future__ import annotations

import typing
from typing import Any

import pytest
from google.protobuf import struct_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from pydantic import BaseModel

from client._gen.aihub.training.v1 import training_service_pb2 as pb
from server.api.convert import config_to_dict
from tests.conftest import QUICK_START_CONFIG as QS
from trainers import spec
from trainers.spec import TrainingSpec
from trainers.spec.fields import _model_in, path_of


def _pairs(model: type[BaseModel], message: Descriptor, where: str = "") -> list[tuple[str, Any, FieldDescriptor | None]]:
    """(path, model field annotation, proto field) for every field of the model, nested."""
    out = []
    for name, field in model.model_fields.items():
        proto = message.fields_by_name.get(name)
        out.append((f"{where}{name}", field.annotation, proto))
        inner = _model_in(field.annotation)
        if (
            inner is not None
            and proto is not None
            and proto.message_type is not None
            and proto.message_type.full_name != "google.protobuf.Struct"
        ):
            out.extend(_pairs(inner, proto.message_type, f"{where}{name}."))
    return out


def test_every_model_field_is_a_proto_field_and_back():
    pairs = _pairs(TrainingSpec, pb.TrainingConfig.DESCRIPTOR)
    assert [path for path, _, proto in pairs if proto is None] == []
    declared = {path for path, _, _ in pairs}

    def proto_paths(message: Descriptor, where: str = "") -> set[str]:
        out = set()
        for f in message.fields:
            out.add(where + f.name)
            if f.message_type is not None and f.message_type.full_name.startswith("aihub.") and not f.message_type.GetOptions().map_entry:
                out |= proto_paths(f.message_type, where + f.name + ".")
        return out

    assert proto_paths(pb.TrainingConfig.DESCRIPTOR) - declared == set()


def test_lists_and_sections_have_their_proto_shape():
    """A model list is a repeated proto field; a model section is a message (a search
    space, hyperparameters: a Struct, read as an object)."""
    for path, annotation, proto in _pairs(TrainingSpec, pb.TrainingConfig.DESCRIPTOR):
        assert proto is not None
        text = str(annotation)
        if "tuple[" in text:
            assert proto.is_repeated, path
        if _model_in(annotation) is not None or typing.get_origin(annotation) is dict:
            assert proto.message_type is not None, path


def test_a_message_and_its_dict_build_the_same_spec():
    config = {**QS, "holidays": {"country": "DE"}, "features": [*QS["features"], "is_holiday"], "training_options": {"use_sample": 0.5}}
    message = pb.TrainingConfig()
    from google.protobuf import json_format

    json_format.ParseDict({k: v for k, v in config.items() if k not in ("model_type", "hyperparameters")}, message)
    message.model_type = 1
    message.hyperparameters.update(config["hyperparameters"])
    assert isinstance(message.hyperparameters, struct_pb2.Struct)
    assert spec.build(config_to_dict(message)) == spec.build(config)


@pytest.mark.parametrize(
    ("config", "field", "reason"),
    [
        ({**QS, "validaton_split": 0.3}, "validaton_split", "is not a field of the config"),
        ({**QS, "ray_config": {"num_worker": 2}}, "ray_config.num_worker", "is not a field of ray_config (num_workers, cpus_per_worker"),
        ({**QS, "backtest": {"folds": 2, "horizon_hours": 24, "step": 1}}, "backtest.step",
         "is not a field of backtest (folds, horizon_hours)"),
        ({**QS, "training_options": {"batch": 8}}, "training_options.batch", "is not a field of training_options"),
        ({**QS, "holidays": {"country": "DE", "region": "BY"}}, "holidays.region",
         "is not a field of holidays (country, subdivision, timezone)"),
        ({**QS, "holidays": "DE"}, "holidays", "must be an object"),
        ({**QS, "tuning": {"search_space": {"num_leaves": {"type": "randint", "lower": 8, "upper": 64}}, "trials": 3}}, "tuning.trials",
         "is not a field of tuning"),
        ({**QS, "features": ["temperature", "Hour"]}, "features[1]", "'Hour' is not a column name"),
        ({**QS, "mlflow_tracking": {"experiment_name": "x", "tags": {"mlflow.user": "me"}}}, "mlflow_tracking.tags.mlflow.user",
         "tags starting with aihub. or mlflow. are set by the service and MLflow"),
    ],
)  # fmt: skip
def test_what_the_model_does_not_declare_is_refused_at_its_path(config, field, reason):
    got = spec.validate(config)
    assert [v.field for v in got] == [field]
    assert got[0].description.startswith(reason), got[0].description


def test_empty_sections_are_not_given():
    """A proto message set but left empty arrives as {}: the same as leaving it out."""
    plain = spec.build(QS)
    for section in ("holidays", "data_checks", "backtest", "tuning", "training_options", "ray_config"):
        assert spec.build({**QS, section: {}}).to_dict() == plain.to_dict(), section
    assert spec.build({**QS, "label_column": "", "preprocessor": "", "feature_table": ""}) == plain


def test_paths_are_the_guides():
    assert path_of(("features", 6)) == "features[6]"
    assert path_of(("hyperparameters", "learning_rate")) == "hyperparameters.learning_rate"
    assert path_of(("mlflow_tracking", "tags", "x" * 100, "[key]")) == "mlflow_tracking.tags." + "x" * 60


def test_a_changed_spec_derives_anew():
    s = spec.build(QS)
    assert s.config_hash and s.workers is None
    other = s.replace(hyperparameters={**s.hyperparameters, "n_estimators": 7})
    assert (
        other.config_hash != s.config_hash and other.config_hash == spec.build({**QS, "hyperparameters": other.hyperparameters}).config_hash
    )


ODD_VALUES = [None, "", {}, [], 0, -1, 1.5, True, "x", ["load"], {"a": 1}, 1e20]


def test_any_value_of_any_field_is_a_violation_never_a_crash():
    """The checks before the model crashed on some of these (IDENT.match on an int, .items()
    on a string); now every one is refused at its field or accepted."""
    for field in TrainingSpec.model_fields:
        for value in ODD_VALUES:
            for model_type in (None, "anomaly"):
                got = spec.validate({**QS, field: value}, model_type=model_type)
                assert all(v.field and v.description for v in got), (field, value)
                if not got:  # accepted: then it builds, and its canonical form reads back
                    built = spec.build({**QS, field: value}, model_type=model_type)
                    assert TrainingSpec.from_dict(built.to_dict()) == built
