"""hemalite.benchmarks: latency/size/accuracy measurement, reports, plots."""
