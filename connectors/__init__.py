"""twinstream.connectors"""
