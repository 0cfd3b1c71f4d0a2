"""hemalite.benchmarks"""
