"""twinstream.streams"""
