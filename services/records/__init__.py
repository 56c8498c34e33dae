"""The shared FHIR record store: current and historical versions of every resource plus typed search-index
tables, behind the ``records`` port (:class:`engine.fhir.repository.ResourceRepository`).

Other parts never import this package: they call ``runtime.records(uow)``."""
