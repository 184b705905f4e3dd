"""Importers of third-party cluster traces into WorkloadTraces."""

from altosim.importers.philly import BadRow, ImportResult, TooLarge, import_philly

__all__ = ["BadRow", "ImportResult", "TooLarge", "import_philly"]
