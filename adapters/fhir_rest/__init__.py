"""The FHIR R4 REST API (http://hl7.org/fhir/R4/http.html) over the record store.

``app.build_app(runtime)`` is the FastAPI application (base ``/fhir``, plus ``/health``, ``/ready``,
``/metrics`` and extra routers such as ``/admin``); ``listener.create(runtime)`` serves it with uvicorn inside
``conduit serve``. Handlers (``interactions``) return an :class:`~adapters.fhir_rest.answer.Answer`; the
app renders it, and every error as an OperationOutcome.
"""
