"""Corporate actions (splits, dividends): the file and the factors, applied by a Spark job."""
