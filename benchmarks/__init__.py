"""ASV benchmarks for changeledger (see asv.conf.json and benchmarks/report_ratios.py)."""
