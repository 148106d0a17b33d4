"""The CAOM columns the local archive serves, and the column configs astroquery fetches.

Names, types and separators follow MAST's `Mast.Caom.Cone` columnsconfig (the recorded one in
../shared/fixtures/mast/columnsconfig.json) plus the newer live columns (intentType, dataRights,
proposal_type ...). astroquery caches the first config it fetches for the whole process, so the
synthetic sky's config is a superset of the recorded one: replay and sky can share one process.
"""

from __future__ import annotations

from typing import Any

# (name, MAST response type, columnsconfig datatype, label, extra config keys)
OBSERVATION_COLUMNS: tuple[tuple[str, str, str, str, dict[str, Any]], ...] = (
    ("intentType", "string", "char", "Observation Type", {}),
    ("obs_collection", "string", "char", "Mission", {"separator": ";"}),
    ("provenance_name", "string", "char", "Provenance Name", {}),
    ("instrument_name", "string", "char", "Instrument", {}),
    ("project", "string", "char", "Project", {"separator": ";"}),
    ("filters", "string", "char", "Filters", {"separator": ";"}),
    ("wavelength_region", "string", "char", "Waveband", {"separator": ";"}),
    ("target_name", "string", "char", "Target Name", {}),
    ("target_classification", "string", "char", "Target Classification", {"separator": ";"}),
    ("obs_id", "string", "char", "Observation ID", {}),
    ("s_ra", "float", "double", "RA", {}),
    ("s_dec", "float", "double", "Dec", {}),
    ("dataproduct_type", "string", "char", "Product Type", {}),
    ("proposal_pi", "string", "char", "Principal Investigator", {}),
    ("calib_level", "int", "int", "Calibration Level", {}),
    ("t_min", "float", "double", "Start Time", {"isMjd": True, "unit": "MJD"}),
    ("t_max", "float", "double", "End Time", {"isMjd": True, "unit": "MJD"}),
    ("t_exptime", "float", "double", "Exposure Length", {"unit": "sec"}),
    ("em_min", "float", "double", "Min. Wavelength", {}),
    ("em_max", "float", "double", "Max. Wavelength", {}),
    ("obs_title", "string", "char", "Observation Title", {}),
    ("t_obs_release", "float", "double", "Release Date", {"isMjd": True, "unit": "MJD"}),
    ("proposal_id", "string", "char", "Proposal ID", {}),
    ("proposal_type", "string", "char", "Proposal Type", {}),
    ("sequence_number", "int", "int", "Sequence Number", {}),
    ("s_region", "string", "char", "s_region", {"unit": "ICRS Shape"}),
    ("jpegURL", "string", "char", "jpegURL", {}),
    ("dataURL", "string", "string", "Data URL", {}),
    ("dataRights", "string", "string", "Data Rights", {}),
    ("mtFlag", "boolean", "boolean", "Moving Target", {}),
    ("srcDen", "float", "float", "Associated Catalogs", {}),
    ("obsid", "string", "long", "Product Group ID", {}),
    ("objID", "string", "long", "Object ID", {}),
)

# Columns the recorded config knows but no row carries (distance exists only in cone searches).
_CONFIG_ONLY = (("distance", "float", 'Distance (")'),)

PRODUCT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("obsID", "string"), ("obs_collection", "string"), ("dataproduct_type", "string"), ("obs_id", "string"),
    ("description", "string"), ("type", "string"), ("dataURI", "string"), ("productType", "string"),
    ("productGroupDescription", "string"), ("productSubGroupDescription", "string"),
    ("productDocumentationURL", "string"), ("project", "string"), ("prvversion", "string"),
    ("productFilename", "string"), ("size", "int"), ("parent_obsid", "string"), ("dataRights", "string"),
    ("calib_level", "int"), ("proposal_id", "string"), ("_selected_", "boolean"),
)


def observation_fields() -> list[dict[str, str]]:
    return [{"name": name, "type": rtype} for name, rtype, _, _, _ in OBSERVATION_COLUMNS]


def product_fields() -> list[dict[str, str]]:
    return [{"name": name, "type": rtype} for name, rtype in PRODUCT_COLUMNS]


def _entry(name: str, datatype: str, label: str, extra: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {"text": label, "vot.datatype": datatype, "vot.ID": name, "vot.name": name}
    entry.update(extra)
    return entry


def caom_columns_config() -> dict[str, Any]:
    """The `Mast.Caom.Cone` columnsconfig: what astroquery validates and types filters with."""
    config: dict[str, Any] = {"_selected_": {"text": "selected", "type": "boolean"}}
    for name, _, datatype, label, extra in OBSERVATION_COLUMNS:
        config[name] = _entry(name, datatype, label, extra)
    for name, datatype, label in _CONFIG_ONLY:
        config[name] = _entry(name, datatype, label, {})
    return config


def products_columns_config() -> dict[str, Any]:
    return {name: _entry(name, "int" if rtype == "int" else "char", name, {}) for name, rtype in PRODUCT_COLUMNS}


COLUMN_CONFIGS: dict[str, Any] = {
    "Mast.Caom.Cone": caom_columns_config(),
    "Mast.Caom.Filtered": caom_columns_config(),
    "Mast.Caom.Products": products_columns_config(),
}
