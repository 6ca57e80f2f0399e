"""Reader-study analysis: reads in, Table 4.II, statistics and report files out. No Django here."""
