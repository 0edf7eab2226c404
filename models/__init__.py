"""Installed as `edgedetect.catalogue_data`: carries catalogue.toml into the wheel."""
