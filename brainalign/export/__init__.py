"""Export of per-target maps to NIfTI / GIfTI / TSV with JSON sidecars and BIDS-derivative names."""

from brainalign.export.maps import bids_name, load_map, save_encoding_maps, save_map

__all__ = ["bids_name", "load_map", "save_encoding_maps", "save_map"]
