"""twinstream.models"""
