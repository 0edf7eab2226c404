"""edgedetect: a quantized-TFLite object-detection daemon for the Raspberry Pi."""

__version__ = "0.1.0"
