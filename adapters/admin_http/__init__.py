"""The admin HTTP API (JSON) a console uses: messages (list, show, reprocess) and channels (status, reload).
Mounted by the FHIR REST listener at ``/admin`` (``adapters.fhir_rest.app.EXTRA_ROUTERS``), behind its auth."""
