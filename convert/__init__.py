"""hemalite.convert"""
