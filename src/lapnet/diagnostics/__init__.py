"""lapnet.diagnostics"""
