"""lapnet.data"""
