"""cloudfilm's HTTP face: DICOMweb, the JSON API, the web viewer, health and metrics."""
