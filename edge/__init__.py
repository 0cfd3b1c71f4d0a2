"""hemalite.edge"""
