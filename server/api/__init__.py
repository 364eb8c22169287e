"""The API process: the gRPC servicers (``servicer.py``, and ``rest.py`` for the REST face's
raw bodies), conversion between protobuf and the records and specs (``convert.py``), the
error interceptor (``errors.py``), job events fanned out to streams (``events.py``), Envoy
(``envoy.py``), and the wiring of it all with job execution (``app.py``).

Imports server.execution, storage, trainers and the client's generated stubs.
"""
