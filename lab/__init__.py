"""inference-lab: what does an inference technique buy, and what does it cost?"""
__version__ = "0.1.0"
