"""lapnet.scratch"""
